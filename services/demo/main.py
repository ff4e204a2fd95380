"""`okrstream demo`: seed a believable organisation through the public HTTP API, then stream
readings so the dashboard lives.

Company → departments → teams objectives over three quarters (the two past ones imported
with `occurred_at` and closed, the current one active), KPIs with readings since the first
quarter, some objectives over-reaching (far behind) and some under-reaching (done early).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.settings import load_settings

READINGS_PER_BATCH = 5000


@dataclass(frozen=True)
class KpiSpec:
    name: str
    unit: str
    direction: str
    target: float
    interval: str
    aggregation: str
    base: float
    trend: float  # change per day
    noise: float


KPIS = (
    KpiSpec("Weekly active users", "users", "increase", 12000, "week", "last", 8000, 18, 300),
    KpiSpec("Signups", "signups", "increase", 120, "day", "sum", 20, 0.02, 6),
    KpiSpec("Churn rate", "%", "decrease", 2.0, "month", "avg", 3.4, -0.004, 0.2),
    KpiSpec("Support tickets", "tickets", "decrease", 60, "day", "sum", 14, 0.0, 4),
    KpiSpec("NPS", "points", "increase", 45, "week", "avg", 31, 0.04, 3),
)

# (department, team, owner, flavour): flavour drives how far the objective gets.
TEAMS = (
    ("Sales", "Mid-market team", "sofia", "under"),
    ("Sales", "Enterprise team", "omar", "behind"),
    ("Product", "Growth squad", "lena", "on_track"),
    ("Product", "Platform squad", "kai", "over"),
    ("Support", "Customer care", "maya", "on_track"),
)


def quarter_start(d: date) -> date:
    return date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def quarters(today: date) -> list[tuple[date, date]]:
    """The two past quarters and the current one, oldest first."""
    result = []
    start = quarter_start(today)
    for _ in range(3):
        end = (date(start.year + (start.month == 10), (start.month + 2) % 12 + 1, 1)) - timedelta(
            days=1
        )
        result.append((start, end))
        start = quarter_start(start - timedelta(days=1))
    return list(reversed(result))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Api:
    """The public API with retries on the answers a busy stack may give."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        for attempt in range(6):
            r = self.http.request(method, path, json=body)
            if r.status_code in (409, 429, 502, 503) and attempt < 5:
                time.sleep(0.2 * 2**attempt)
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} → {r.status_code}: {r.text[:300]}")
            return dict(r.json()) if r.content else {}
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


def _value(spec: KpiSpec, day_index: float, rng: random.Random) -> float:
    seasonal = math.sin(day_index / 7 * 2 * math.pi) * spec.noise * 0.5
    return max(0.0, spec.base + spec.trend * day_index + seasonal + rng.gauss(0, spec.noise))


def seed(api: Api, rng: random.Random, now: datetime) -> dict[str, str]:
    """Create the organisation; return kpi name → id."""
    qs = quarters(now.date())
    first = datetime.combine(qs[0][0], datetime.min.time(), tzinfo=UTC)
    kpi_ids: dict[str, str] = {}
    for spec in KPIS:
        created = api.call(
            "POST",
            "/v1/kpis",
            {
                "name": spec.name, "unit": spec.unit, "direction": spec.direction,
                "target": spec.target, "interval": spec.interval,
                "aggregation": spec.aggregation, "owner": "ops",
                "description": f"{spec.name} ({spec.aggregation} per {spec.interval})",
                "occurred_at": _iso(first),
            },
        )  # fmt: skip
        kpi_ids[spec.name] = created["id"]
    # Readings: several a day per KPI since the first quarter began.
    batch: list[dict[str, Any]] = []
    days = (now - first).days
    for spec in KPIS:
        per_day = 6 if spec.aggregation == "sum" else 3
        for d in range(days + 1):
            for k in range(per_day):
                at = first + timedelta(days=d, hours=2 + k * (20 // per_day))
                if at >= now:
                    break
                value = _value(spec, d, rng) / (per_day if spec.aggregation == "sum" else 1)
                batch.append(
                    {"kpi_id": kpi_ids[spec.name], "value": round(value, 3),
                     "observed_at": _iso(at), "source": "demo-import"}
                )  # fmt: skip
                if len(batch) >= READINGS_PER_BATCH:
                    api.call("POST", "/v1/readings", {"readings": batch})
                    batch = []
    if batch:
        api.call("POST", "/v1/readings", {"readings": batch})

    for qi, (start, end) in enumerate(qs):
        past = qi < 2
        q_start = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
        q_end = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        label = f"Q{(start.month - 1) // 3 + 1} {start.year}"
        period = {"start": start.isoformat(), "end": end.isoformat()}
        at = q_start + timedelta(hours=9)
        company = api.call("POST", "/v1/objectives", {
            "title": f"Win the mid-market ({label})", "owner": "ceo", "level": "company",
            "description": "Grow active usage while keeping customers happy.",
            "period": period, "occurred_at": _iso(at),
        })["id"]  # fmt: skip
        api.call("POST", f"/v1/objectives/{company}/key-results", {
            "title": "Weekly active users", "kind": "metric", "start": 8000, "target": 12000,
            "kpi_id": kpi_ids["Weekly active users"], "occurred_at": _iso(at),
        })  # fmt: skip
        api.call("POST", f"/v1/objectives/{company}/key-results", {
            "title": "NPS at or above 40", "kind": "metric", "start": 30, "target": 40,
            "kpi_id": kpi_ids["NPS"], "aggregation": "avg", "occurred_at": _iso(at),
        })  # fmt: skip
        departments: dict[str, str] = {}
        objectives = [company]
        for dept, team, owner, flavour in TEAMS:
            if dept not in departments:
                departments[dept] = api.call("POST", "/v1/objectives", {
                    "title": f"{dept}: deliver the plan ({label})", "owner": dept.lower(),
                    "level": "department", "parent_id": company, "period": period,
                    "occurred_at": _iso(at),
                })["id"]  # fmt: skip
                objectives.append(departments[dept])
                plan = api.call("POST", f"/v1/objectives/{departments[dept]}/key-results", {
                    "title": "Quarterly plan agreed", "kind": "milestone",
                    "occurred_at": _iso(at),
                })["id"]  # fmt: skip
                api.call(
                    "POST",
                    f"/v1/objectives/{departments[dept]}/key-results/{plan}/check-ins",
                    {"done": True, "confidence": 0.9, "occurred_at": _iso(at + timedelta(days=10))},
                )
            oid = api.call("POST", "/v1/objectives", {
                "title": f"{team}: {_team_goal(flavour)}", "owner": owner, "level": "team",
                "parent_id": departments[dept], "period": period, "occurred_at": _iso(at),
            })["id"]  # fmt: skip
            objectives.append(oid)
            kr = api.call("POST", f"/v1/objectives/{oid}/key-results", {
                "title": "Deals / features delivered", "kind": "metric", "start": 0,
                "target": 20, "unit": "items", "weight": 2, "occurred_at": _iso(at),
            })["id"]  # fmt: skip
            milestone = api.call("POST", f"/v1/objectives/{oid}/key-results", {
                "title": "Launch the quarter's headline", "kind": "milestone",
                "occurred_at": _iso(at),
            })["id"]  # fmt: skip
            pace = {"under": 1.6, "on_track": 1.0, "behind": 0.55, "over": 0.25}[flavour]
            horizon = min(now, q_end - timedelta(hours=1))
            span = (horizon - q_start).total_seconds()
            steps = 6
            for s in range(1, steps + 1):
                when = q_start + timedelta(seconds=span * s / (steps + 1))
                share = (when - q_start) / (q_end - q_start)
                value = round(min(30.0, 20 * share * pace * rng.uniform(0.9, 1.1)), 1)
                api.call("POST", f"/v1/objectives/{oid}/key-results/{kr}/check-ins", {
                    "value": value, "confidence": round(rng.uniform(0.4, 0.95), 2),
                    "note": "weekly review", "occurred_at": _iso(when),
                })  # fmt: skip
            if flavour in ("under", "on_track") or (past and flavour == "behind"):
                api.call("POST", f"/v1/objectives/{oid}/key-results/{milestone}/check-ins", {
                    "done": True, "occurred_at": _iso(q_start + (horizon - q_start) * 0.6),
                })  # fmt: skip
        if past:
            closing = _iso(q_end - timedelta(minutes=1))
            for oid in reversed(objectives):
                api.call("POST", f"/v1/objectives/{oid}/close",
                         {"note": "quarter review", "occurred_at": closing})  # fmt: skip
    return kpi_ids


def _team_goal(flavour: str) -> str:
    return {
        "under": "close the mid-market pipeline",
        "on_track": "ship onboarding v2",
        "behind": "land three lighthouse customers",
        "over": "rebuild the platform in one quarter",
    }[flavour]


def stream(api: Api, kpi_ids: dict[str, str], rng: random.Random, rate: float,
           duration: float | None, start_day: float) -> int:  # fmt: skip
    """Send readings at `rate` per second (in small batches) until `duration` elapses."""
    sent = 0
    began = time.monotonic()
    interval = 0.5
    specs = {spec.name: spec for spec in KPIS}
    while duration is None or time.monotonic() - began < duration:
        tick = time.monotonic()
        n = max(1, round(rate * interval))
        now = datetime.now(UTC)
        batch = []
        for _ in range(n):
            name = rng.choice(list(kpi_ids))
            spec = specs[name]
            per = 6 if spec.aggregation == "sum" else 1
            value = _value(spec, start_day + (time.monotonic() - began) / 86400, rng) / per
            batch.append(
                {"kpi_id": kpi_ids[name], "value": round(value, 3), "observed_at": _iso(now),
                 "source": "demo-live"}
            )  # fmt: skip
        api.call("POST", "/v1/readings", {"readings": batch})
        sent += len(batch)
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    return sent


def _seeded_file(data_dir: Path, url: str, who: str) -> Path:
    """Where a seeding into (`url`, organisation or token `who`) is remembered."""
    key = hashlib.sha256(f"{url.rstrip('/')}\x00{who}".encode()).hexdigest()[:16]
    return data_dir / "demo" / f"seeded-{key}.json"


def _already_seeded(api: Api, marker: Path) -> dict[str, str] | None:
    """The KPI ids of an earlier seeding into this organisation, when its KPIs still exist
    (a re-run streams into them instead of seeding a second copy of the company)."""
    try:
        kpi_ids = {str(k): str(v) for k, v in orjson.loads(marker.read_bytes()).items()}
    except (OSError, ValueError, AttributeError):
        return None
    if set(kpi_ids) != {spec.name for spec in KPIS}:
        return None
    try:
        api.call("GET", f"/v1/kpis/{next(iter(kpi_ids.values()))}")
    except RuntimeError:  # another store now (a clean data dir), or another organisation
        return None
    return kpi_ids


def run(args: argparse.Namespace) -> int:
    """Seed the organisation (once: a re-run streams into it) and stream readings; 0 on
    success."""
    settings = load_settings()
    url = args.url or f"http://{settings.http_host}:{settings.http_port}"
    token = args.token
    if not token:
        from services.auth.tokens import TokenStore

        store = TokenStore.from_settings(settings)
        try:
            token = store.create(args.org, ["read", "write", "ingest"])
        finally:
            store.close()
        print(f"demo token (org {args.org!r}, read,write,ingest): {token}", flush=True)
    rng = random.Random(args.seed)
    api = Api(url, token)
    marker = _seeded_file(settings.data_dir, url, args.token or f"org:{args.org}")
    try:
        now = datetime.now(UTC)
        found = _already_seeded(api, marker)
        if found is not None:
            print(f"the demo organisation in {url} is seeded already: not seeding it again",
                  flush=True)  # fmt: skip
            kpi_ids = found
        else:
            print(f"seeding a demo organisation into {url} …", flush=True)
            kpi_ids = seed(api, rng, now)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_bytes(orjson.dumps(kpi_ids))
        first = quarters(now.date())[0][0]
        start_day = (now.date() - first).days
        print(f"seeded; open {url}/ with the token above. streaming {args.rate}/s readings",
              flush=True)  # fmt: skip
        sent = stream(api, kpi_ids, rng, float(args.rate), args.duration, start_day)
        print(f"done: {sent} live readings sent", flush=True)
    except (httpx.HTTPError, RuntimeError) as exc:
        print(f"okrstream demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        api.close()
    return 0

"""Query benchmark: GET objective latency/throughput and as_of latency over 10,000 readings.

The projection store (SQLite in a temporary data dir) is populated directly, the query app
runs alone under uvicorn in its own process, and the load comes from separate processes.
Goals (issue 5): p99 ≤ 10 ms at ≥ 500 rps; as_of p99 ≤ 50 ms.

    .venv/bin/python -m tests.bench.bench_query      # prints one JSON object
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SIZES = {
    "objectives": 200,
    "readings": 10_000,
    "workers": 4,
    "server_workers": 2,  # OKR_HTTP_WORKERS: one front door process per core
    "paced_rps": 500,
    "duration_s": 8,
    "as_of_requests": 300,
}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _populate(data_dir: Path, sizes: dict[str, int]) -> dict[str, Any]:
    from services.auth.tokens import TokenStore
    from services.projectionstore.db import Database
    from services.settings import Settings
    from tests.integration.query.query_seed import KR, Seeder, create_tables, set_position

    settings = Settings(data_dir=data_dir)
    db = Database.from_settings(settings, settings.projections_db_path)
    tables = create_tables(db)
    seeder = Seeder(db, tables)
    start = date(2026, 1, 1)
    period = (start, date(2026, 12, 31))
    at = datetime(2026, 6, 1, tzinfo=UTC)
    kpi = seeder.kpi("acme", "Busy KPI", interval="week", aggregation="avg")
    n = sizes["readings"]
    step = (at - datetime(2026, 1, 1, tzinfo=UTC)) / n
    seeder.readings(
        "acme",
        kpi,
        [(datetime(2026, 1, 1, tzinfo=UTC) + step * i, float(i % 97)) for i in range(n)],
    )
    heavy = seeder.objective(
        "acme", "Heavy", period=period, at=at,
        krs=[KR("metric", "Busy", start=0, target=100, kpi_id=kpi, aggregation="avg", current=48)],
    )  # fmt: skip
    ids = [heavy]
    for i in range(sizes["objectives"]):
        ids.append(
            seeder.objective(
                "acme",
                f"Objective {i}",
                period=period,
                at=at,
                parent_id=heavy if i < 5 else None,
                krs=[
                    KR("metric", "m", start=0, target=10, current=i % 10),
                    KR("milestone", "done", done=i % 2 == 0),
                ],
            )
        )
    set_position(db, tables, next(seeder.positions), settings.kafka_partitions)
    db.close()
    tokens = TokenStore.from_settings(settings)
    token = tokens.create("acme", ["read"])
    tokens.close()
    return {"ids": ids, "heavy": heavy, "token": token}


def _serve(data_dir: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OKR_DATA_DIR": str(data_dir), "OKR_HTTP_PORT": str(port)}
    env.pop("OKR_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.query.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("query app did not start")


def _worker(url: str, token: str, ids: list[str], rate: float, duration: float, out: Any) -> None:
    """GET objective views; paced to `rate` req/s (0 = as fast as possible)."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        began = time.perf_counter()
        i = 0
        while (now := time.perf_counter()) - began < duration:
            if rate > 0:
                due = began + i / rate
                if due > now:
                    time.sleep(due - now)
            t0 = time.perf_counter()
            r = client.get(f"/v1/objectives/{ids[i % len(ids)]}")
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200
            i += 1
    out.put((latencies, errors, duration))


def _load(
    url: str, token: str, ids: list[str], workers: int, rate: float, duration: float
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    per = rate / workers if rate else 0.0
    procs = [
        ctx.Process(target=_worker, args=(url, token, ids[w::workers], per, duration, out))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(10)
    latencies = [x for lat, _, _ in results for x in lat]
    return {
        "requests": len(latencies),
        "errors": sum(e for _, e, _ in results),
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
    }


def _as_of(url: str, token: str, objective: str, n: int) -> dict[str, float]:
    latencies: list[float] = []
    start = datetime(2026, 1, 2, tzinfo=UTC)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(n):
            at = start + timedelta(hours=(i * 37) % (150 * 24))
            t0 = time.perf_counter()
            r = client.get(f"/v1/objectives/{objective}", params={"as_of": at.isoformat()})
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    return {
        "requests": n,
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
    }


def run(sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Run the query benchmark; returns its figures (latencies in ms, rates per second)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    from tests.support.ports import free_port

    with tempfile.TemporaryDirectory(prefix="okr-bench-query-") as tmp:
        data_dir = Path(tmp)
        world = _populate(data_dir, sizes)
        port = free_port()
        server = _serve(data_dir, port, sizes["server_workers"])
        url = f"http://127.0.0.1:{port}"
        try:
            _load(url, world["token"], world["ids"], 1, 0, 1.0)  # warm-up
            paced = _load(url, world["token"], world["ids"], sizes["workers"],
                          sizes["paced_rps"], sizes["duration_s"])  # fmt: skip
            flat_out = _load(url, world["token"], world["ids"], sizes["workers"], 0,
                             sizes["duration_s"])  # fmt: skip
            as_of = _as_of(url, world["token"], world["heavy"], sizes["as_of_requests"])
        finally:
            server.terminate()
            server.wait(10)
    return {
        "bench": "query",
        "sizes": sizes,
        "get_objective_paced": paced,
        "get_objective_max": flat_out,
        "as_of_10k_readings": as_of,
        "goals": {
            "p99_le_10ms_at_500rps": paced["p99_ms"] <= 10 and paced["rps"] >= 0.95 * 500,
            "as_of_p99_le_50ms": as_of["p99_ms"] <= 50,
        },
    }


if __name__ == "__main__":
    print(json.dumps(run()))

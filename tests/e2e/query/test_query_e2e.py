"""Reads over HTTP against `okrstream up`: min_position, pagination, as_of/known_at,
tenancy on every read route of the served OpenAPI, and SSE delivery."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.auth.tokens import TokenStore
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

NOT_TENANT_DATA = {"/", "/healthz", "/readyz", "/metrics", "/v1/stream"}


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> dict[str, Any]:
    token = stack.dev_token()
    api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    now = datetime.now(UTC)
    q = {
        "start": (now - timedelta(days=45)).date().isoformat(),
        "end": (now + timedelta(days=44)).date().isoformat(),
    }
    kpi = api.post("/v1/kpis", json={
        "name": "Signups", "direction": "increase", "target": 100, "interval": "month",
        "aggregation": "sum", "occurred_at": (now - timedelta(days=44)).isoformat(),
    }).json()["id"]  # fmt: skip
    drafted = (now - timedelta(days=44)).isoformat()
    root = api.post("/v1/objectives", json={
        "title": "Company", "owner": "ceo", "level": "company", "period": q,
        "occurred_at": drafted,
    }).json()["id"]  # fmt: skip
    children = [
        api.post(
            "/v1/objectives",
            json={
                "title": f"Team {i}",
                "owner": f"o{i}",
                "level": "team",
                "parent_id": root,
                "period": q,
            },
        ).json()["id"]
        for i in range(3)
    ]
    kr = api.post(f"/v1/objectives/{root}/key-results", json={
        "title": "Signups", "kind": "metric", "start": 0, "target": 100, "kpi_id": kpi,
        "occurred_at": (now - timedelta(days=40)).isoformat(),
    }).json()["id"]  # fmt: skip
    early = (now - timedelta(days=30)).isoformat()
    api.post(
        "/v1/readings", json={"readings": [{"kpi_id": kpi, "value": 10, "observed_at": early}]}
    )
    position = api.post("/v1/readings", json={"readings": [
        {"kpi_id": kpi, "value": 30, "observed_at": (now - timedelta(minutes=1)).isoformat()}
    ]}).json()["position"]  # fmt: skip
    settings = stack.settings
    tokens = TokenStore.from_settings(settings)
    other = tokens.create("someone-else", ["read"])
    tokens.close()
    return {"api": api, "token": token, "other": other, "kpi": kpi, "root": root,
            "children": children, "kr": kr, "position": position, "now": now}  # fmt: skip


def test_min_position_and_views(seeded: dict[str, Any]) -> None:
    api: httpx.Client = seeded["api"]
    r = api.get(f"/v1/objectives/{seeded['root']}", params={"min_position": seeded["position"]})
    assert r.status_code == 200, r.text
    assert int(r.headers["X-Projection-Position"]) >= seeded["position"]
    view = r.json()
    assert view["score"] == pytest.approx(0.4)  # sum 10 + 30 of 100
    assert sorted(view["children"]) == sorted(seeded["children"])
    late = api.get("/v1/objectives", params={"min_position": seeded["position"] + 10**9})
    assert late.status_code == 503
    assert late.headers["Retry-After"]
    kpi = api.get(f"/v1/kpis/{seeded['kpi']}").json()
    assert kpi["last_reading_at"] is not None
    assert api.get(f"/v1/kpis/{seeded['kpi']}/series").json()["items"]
    tree = api.get("/v1/objectives/tree", params={"root": seeded["root"]}).json()
    assert len(tree["items"][0]["children"]) == 3


def test_pagination(seeded: dict[str, Any]) -> None:
    api: httpx.Client = seeded["api"]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api.get("/v1/objectives", params=params).json()
        seen += [v["id"] for v in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted([seeded["root"], *seeded["children"]])
    assert api.get("/v1/objectives", params={"limit": 1001}).status_code == 422


def test_as_of_and_known_at(seeded: dict[str, Any]) -> None:
    api: httpx.Client = seeded["api"]
    now: datetime = seeded["now"]
    then = (now - timedelta(days=20)).isoformat()
    r = api.get(f"/v1/objectives/{seeded['root']}", params={"as_of": then})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["score"] == pytest.approx(0.1)  # only the early reading
    # Known before anything was recorded: the objective did not exist yet.
    before = (now - timedelta(hours=1)).isoformat()
    assert (
        api.get(f"/v1/objectives/{seeded['root']}", params={"known_at": before}).status_code == 404
    )
    assert api.get(f"/v1/kpis/{seeded['kpi']}", params={"as_of": then}).status_code == 200


def test_tenancy_on_every_read_route(stack: Stack, seeded: dict[str, Any]) -> None:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    fill = {"objective_id": seeded["root"], "kpi_id": seeded["kpi"], "kr_id": seeded["kr"]}
    mine = [seeded["root"], seeded["kpi"], *seeded["children"]]
    checked = 0
    for path, methods in spec["paths"].items():
        if "get" not in methods or path in NOT_TENANT_DATA:
            continue
        url = path.format(**fill)
        r = httpx.get(f"{stack.url}{url}", headers={"Authorization": f"Bearer {seeded['other']}"})
        assert r.status_code in (200, 404), (path, r.status_code, r.text)
        if r.status_code == 200:
            assert not any(i in r.text for i in mine), (path, r.text)
        checked += 1
    assert checked >= 8


def test_sse_delivers_an_update(stack: Stack, seeded: dict[str, Any]) -> None:
    lines: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{stack.url}/v1/stream?access_token={seeded['token']}",
                          timeout=30) as r:  # fmt: skip
            for line in r.iter_lines():
                lines.append(line)
                if "objective.updated" in line:
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not any("connected" in x for x in lines):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    seeded["api"].post("/v1/readings", json={"readings": [
        {"kpi_id": seeded["kpi"], "value": 5, "observed_at": datetime.now(UTC).isoformat()}
    ]})  # fmt: skip
    t.join(30)
    assert any("event: objective.updated" in x for x in lines), lines


def test_dashboard_and_ops(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/").status_code == 200
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert "okr_processor_applied_position" in httpx.get(f"{stack.url}/metrics").text


def _sse_events(
    url: str, headers: dict[str, str], until: Any, timeout: float = 20
) -> list[tuple[int | None, str]]:
    """(id, event) of each event of the stream at `url`, until `until(events)` holds."""
    found: list[tuple[int | None, str]] = []
    block: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line == "" and "event" in block:
                found.append((int(block["id"]) if "id" in block else None, block["event"]))
                if until(found):
                    return found
            if line == "":
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = value
            assert time.monotonic() < deadline, found
    return found


def test_sse_resumes_after_last_event_id(stack: Stack, seeded: dict[str, Any]) -> None:
    """A client that reconnects with the id of the last event it saw gets what the processor
    wrote while it was away, from the catch-up, and nothing it had already."""
    api: httpx.Client = seeded["api"]
    url = f"{stack.url}/v1/stream?access_token={seeded['token']}"
    result: list[list[tuple[int | None, str]]] = []

    def listen() -> None:
        until = lambda e: any(k == "objective.updated" for _, k in e)  # noqa: E731
        result.append(_sse_events(url, {}, until, timeout=40))

    first = threading.Thread(target=listen, daemon=True)
    first.start()
    # A reading every 2 s until the live stream shows one: whenever the stream and its feed
    # are ready, the next one is seen.
    deadline = time.monotonic() + 40
    while first.is_alive() and time.monotonic() < deadline:
        observed = datetime.now(UTC).isoformat()
        api.post("/v1/readings", json={"readings": [
            {"kpi_id": seeded["kpi"], "value": 1, "observed_at": observed}
        ]})  # fmt: skip
        first.join(2)
    assert result, "no objective.updated on the live stream"
    seen = max(i for i, _ in result[0] if i is not None)
    # While disconnected: another reading, applied before the client comes back.
    position = api.post("/v1/readings", json={"readings": [
        {"kpi_id": seeded["kpi"], "value": 2, "observed_at": datetime.now(UTC).isoformat()}
    ]}).json()["position"]  # fmt: skip
    r = api.get(f"/v1/objectives/{seeded['root']}", params={"min_position": position})
    assert r.status_code == 200, r.text
    resumed = _sse_events(
        url,
        {"Last-Event-ID": str(seen)},
        lambda e: any(k == "objective.updated" for _, k in e),
    )
    ids = [i for i, _ in resumed if i is not None]
    assert len(ids) == len(resumed), resumed
    assert all(i > seen for i in ids), (seen, resumed)
    assert ids == sorted(set(ids)), resumed
    assert "stream.reset" not in [k for _, k in resumed]

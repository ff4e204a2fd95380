"""Every read of API.md against a real projection store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute

import events
from services.projectionstore.meta import create_tables, drop_tables, write_lock, write_meta
from services.projectionstore.schema import Tables
from tests.integration.query.conftest import World

pytestmark = pytest.mark.integration

VIEW_FIELDS = {
    "id", "title", "description", "owner", "level", "parent_id", "period", "state", "version",
    "score", "progress", "rollup_score", "expected", "health", "status", "forecast", "zone",
    "policy_version", "evaluated_at", "children", "key_results",
}  # fmt: skip
KR_FIELDS = {
    "id", "title", "kind", "unit", "start", "target", "comparison", "weight", "kpi_id",
    "aggregation", "current", "progress", "score", "confidence", "updated_at",
}  # fmt: skip


def test_objective_view_has_every_field_and_is_evaluated_now(world: World) -> None:
    before = datetime.now(UTC)
    r = world.get(f"/v1/objectives/{world.company}")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view.keys() >= VIEW_FIELDS
    assert view["title"] == "Delight customers <script>alert(1)</script>"
    assert r.headers["ETag"] == f'"{view["version"]}"'
    assert int(r.headers["X-Projection-Position"]) == world.position
    assert view["score"] == pytest.approx((0.6 + 1.0) / 2)
    assert view["children"] == [world.department]
    assert [kr["title"] for kr in view["key_results"]] == ["NPS", "Launch"]
    assert view["key_results"][0].keys() >= KR_FIELDS
    evaluated = datetime.fromisoformat(view["evaluated_at"].replace("Z", "+00:00"))
    assert evaluated >= before - timedelta(seconds=1)
    assert 0.4 < view["expected"] < 0.6
    assert view["health"] == pytest.approx(view["score"] / view["expected"])
    assert view["status"] in {"on_track", "behind", "at_risk", "achieved"}
    assert view["period"]["start"] < view["period"]["end"]
    assert r.headers["Cache-Control"] == "no-store"  # readings move scores, not versions


def test_unknown_objective_is_404_problem(world: World) -> None:
    r = world.get("/v1/objectives/00000000-0000-0000-0000-000000000001")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404
    assert world.get("/v1/objectives/not-a-uuid").status_code == 422


def test_auth_errors(world: World) -> None:
    assert world.client.get("/v1/objectives").status_code == 401
    assert world.get("/v1/objectives", token="okr_nope").status_code == 401
    r = world.get("/v1/objectives", token=world.writer_only)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")


def test_list_filters(world: World) -> None:
    def ids(**params: object) -> list[str]:
        r = world.get("/v1/objectives", **params)
        assert r.status_code == 200, r.text
        assert int(r.headers["X-Projection-Position"]) == world.position
        return [v["id"] for v in r.json()["items"]]

    everything = {world.company, world.department, world.team}
    assert set(ids()) == everything
    assert set(ids(include_archived=True)) == everything | {world.archived}
    assert ids(owner="bo") == [world.department]
    assert ids(level="team") == [world.team]
    assert ids(parent_id=world.company) == [world.department]
    achieved = ids(status="achieved")
    assert world.team in achieved
    assert world.company not in achieved
    assert ids(owner="nobody") == []
    assert world.get("/v1/objectives", level="galaxy").status_code == 422
    assert world.get("/v1/objectives", status="great").status_code == 422


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_limit_out_of_range_is_422(world: World, limit: int) -> None:
    r = world.get("/v1/objectives", limit=limit)
    assert r.status_code == 422
    assert r.json()["errors"]


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/detections", "subject_id"), ("/v1/objectives", "owner"), ("/v1/objectives", "cursor")],
)
def test_a_nul_in_free_text_is_422_on_every_engine(world: World, path: str, param: str) -> None:
    """PostgreSQL text cannot hold NUL: refused up front, not a 500 from the database."""
    r = world.get(path, **{param: "a\x00b"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"]


def test_pagination_walks_every_item_once(world: World) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, object] = {"limit": 1, "include_archived": True}
        if cursor:
            params["cursor"] = cursor
        body = world.get("/v1/objectives", **params).json()
        seen += [v["id"] for v in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({world.company, world.department, world.team, world.archived})
    assert world.get("/v1/objectives", cursor="garbage!").status_code == 422


def test_tree_nests_views_with_rollup(world: World) -> None:
    body = world.get("/v1/objectives/tree").json()
    assert [n["id"] for n in body["items"]] == [world.company]
    dept = body["items"][0]["children"][0]
    assert dept["id"] == world.department
    assert dept["children"][0]["id"] == world.team
    assert "rollup_score" in dept
    sub = world.get("/v1/objectives/tree", root=world.department).json()
    assert [n["id"] for n in sub["items"]] == [world.department]
    assert world.get("/v1/objectives/tree", root=world.foreign).status_code == 404


def test_history_with_range_and_pages(world: World) -> None:
    r = world.get(f"/v1/objectives/{world.company}/history")
    items = r.json()["items"]
    assert len(items) == 3
    assert {"occurred_at", "recorded_at", "event_id", "event_type", "score", "progress",
            "key_results"} <= items[0].keys()  # fmt: skip
    assert [i["score"] for i in items] == sorted(i["score"] for i in items)
    first = world.get(f"/v1/objectives/{world.company}/history", limit=2).json()
    assert len(first["items"]) == 2
    rest = world.get(
        f"/v1/objectives/{world.company}/history", limit=2, cursor=first["next_cursor"]
    ).json()
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    cut = items[1]["occurred_at"]
    ranged = world.get(f"/v1/objectives/{world.company}/history", to=cut).json()["items"]
    assert len(ranged) == 2
    ranged = world.get(f"/v1/objectives/{world.company}/history", **{"from": cut}).json()
    assert len(ranged["items"]) == 2
    assert (
        world.get(f"/v1/objectives/{world.company}/history", to="2026-01-01T00:00:00").status_code
        == 422
    )


def test_events_carry_envelope_and_chain(world: World) -> None:
    items = world.get(f"/v1/objectives/{world.company}/events").json()["items"]
    assert [e["stream_version"] for e in items] == [1, 2, 3]
    assert items[0]["type"] == "objective.drafted"
    assert items[0]["prev_hash"] is None
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(items))
    assert {"event_id", "org_id", "occurred_at", "recorded_at", "hash"} <= items[0].keys()


def test_kpi_view_and_series(world: World) -> None:
    r = world.get(f"/v1/kpis/{world.kpi}")
    assert r.status_code == 200, r.text
    kpi = r.json()
    assert {"id", "name", "unit", "direction", "target", "amber", "interval", "aggregation",
            "current", "status", "last_reading_at", "stale", "version"} <= kpi.keys()  # fmt: skip
    assert r.headers["ETag"] == '"1"'
    # Today's bucket: 40 (five minutes ago, unless that was yesterday) + 70.
    assert kpi["current"] in (110.0, 70.0)
    assert kpi["status"] == ("green" if kpi["current"] >= 100 else "red")
    assert kpi["stale"] is False
    assert kpi["policy_version"] == "v1", "the policy version is stamped on every view"
    series = world.get(f"/v1/kpis/{world.kpi}/series").json()
    assert {"bucket_start", "value", "count", "status"} <= series["items"][0].keys()
    assert sum(b["count"] for b in series["items"]) == 21
    assert len(series["items"]) in (20, 21)
    first = world.get(f"/v1/kpis/{world.kpi}/series", limit=5).json()
    assert len(first["items"]) == 5
    second = world.get(f"/v1/kpis/{world.kpi}/series", limit=5, cursor=first["next_cursor"]).json()
    assert second["items"][0]["bucket_start"] > first["items"][-1]["bucket_start"]
    recent = world.get(
        f"/v1/kpis/{world.kpi}/series",
        **{"from": (datetime.now(UTC) - timedelta(days=2)).isoformat()},
    ).json()
    assert 2 <= len(recent["items"]) <= 3
    assert world.get(f"/v1/kpis/{world.foreign_kpi}").status_code == 404
    assert world.get(f"/v1/kpis/{world.foreign_kpi}/series").status_code == 404


def test_detections_filters_and_pages(world: World) -> None:
    def ids(**params: object) -> list[str]:
        r = world.get("/v1/detections", **params)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["items"]]

    mine = world.detections[:3]
    assert ids() == list(reversed(mine))  # newest first
    assert ids(kind="over_reach") == [mine[0]]
    assert ids(reason="achieved_early") == [mine[1]]
    assert ids(subject_id=world.kpi) == [mine[2]]
    assert set(ids(active=True)) == {mine[0], mine[2]}
    assert ids(active=False) == [mine[1]]
    page = world.get("/v1/detections", limit=2).json()
    rest = world.get("/v1/detections", limit=2, cursor=page["next_cursor"]).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == list(reversed(mine))
    d = world.get("/v1/detections", kind="kpi_breach").json()["items"][0]
    assert {"id", "kind", "reason", "subject_type", "subject_id", "period", "detected_at",
            "resolved_at", "policy_version", "evidence"} <= d.keys()  # fmt: skip


def test_min_position(world: World) -> None:
    ok = world.get(f"/v1/objectives/{world.company}", min_position=world.position)
    assert ok.status_code == 200
    started = time.monotonic()
    late = world.get(f"/v1/objectives/{world.company}", min_position=world.position + 1)
    assert late.status_code == 503
    assert late.headers["Retry-After"]
    assert time.monotonic() - started >= 0.4
    assert world.get("/v1/detections", min_position=-1).status_code == 422


def test_min_position_answers_once_the_processor_catches_up(world: World) -> None:
    import threading

    from tests.integration.query.query_seed import set_position

    world.client.app.state.min_position_wait_s = 5.0  # type: ignore[attr-defined]
    timer = threading.Timer(
        0.3,
        set_position,
        (world.db, world.tables, world.position + 5, world.settings.kafka_partitions),
    )
    timer.start()
    r = world.get("/v1/objectives", min_position=world.position + 5)
    timer.join()
    assert r.status_code == 200
    assert int(r.headers["X-Projection-Position"]) == world.position + 5


def _read_routes(app) -> list[APIRoute]:  # type: ignore[no-untyped-def]
    """Every GET API route of the app, through included routers."""
    found: list[APIRoute] = []

    def walk(routes) -> None:  # type: ignore[no-untyped-def]
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes)
            elif hasattr(route, "routes") and not hasattr(route, "app"):
                walk(route.routes)

    walk(app.routes)
    return [r for r in found if "GET" in r.methods]


# Routes that serve no organisation's data (operations), or are covered by their own test.
NOT_TENANT_DATA = {"/", "/healthz", "/readyz", "/metrics", "/v1/stream"}


def test_tenancy_on_every_read_route(world: World) -> None:
    """Another organisation's token sees 404 or nothing of acme's on every route."""
    routes = _read_routes(world.client.app)
    paths = {r.path for r in routes}
    assert "/v1/objectives/{objective_id}" in paths
    kr = world.get(f"/v1/objectives/{world.company}").json()["key_results"][0]["id"]
    acme_ids = [world.company, world.department, world.team, world.kpi, kr,
                *world.detections[:3]]  # fmt: skip
    fill = {"objective_id": world.company, "kpi_id": world.kpi, "kr_id": kr}
    extra = {"/v1/objectives/tree": {"root": world.company}}
    checked = 0
    for route in routes:
        if route.path in NOT_TENANT_DATA:
            continue
        path = route.path.format(**{p: fill[p] for p in route.param_convertors})
        for params in ({}, extra.get(route.path, {})):
            # The owner sees it; the other organisation does not.
            own = world.get(path, **params)
            assert own.status_code == 200, (path, own.text)
            r = world.get(path, token=world.other, **params)
            assert r.status_code in (200, 404), (path, r.status_code, r.text)
            if r.status_code == 200:
                assert not any(i in r.text for i in acme_ids), (path, r.text)
                items = r.json().get("items")
                assert items is None or all(i.get("org_id") in (None, "globex") for i in items)
            checked += 1
    assert checked >= 8


def test_foreign_objective_is_404_for_owner_token(world: World) -> None:
    for suffix in ("", "/history", "/events"):
        assert world.get(f"/v1/objectives/{world.foreign}{suffix}").status_code == 404
    assert world.get("/v1/objectives/tree", token=world.other).json()["items"][0]["id"] == (
        world.foreign
    )


def test_ops_endpoints(world: World) -> None:
    assert world.client.get("/healthz").json() == {"status": "ok"}
    ready = world.client.get("/readyz")
    body = ready.json()
    assert body["checks"]["projection_store"]["applied_position"] == world.position
    assert body["checks"]["token_store"]["ok"] is True
    # No broker in this test: not ready, and says why.
    assert ready.status_code == 503
    assert body["checks"]["broker"]["ok"] is False
    world.get(f"/v1/objectives/{world.company}")
    metrics = world.client.get("/metrics").text
    assert 'route="/v1/objectives/{objective_id}"' in metrics
    assert f"okr_processor_applied_position {float(world.position)}" in metrics
    assert "okr_processor_objectives_set_aside 0.0" in metrics
    assert "okr_processor_goal_events_parked 0.0" in metrics
    with world.db.transaction() as cur:
        cur.execute(
            f"INSERT INTO {world.tables.set_aside} VALUES (?, 'e', 't', 't', 'boom', 't')",
            (world.team,),
        )
        cur.executemany(
            f"INSERT INTO {world.tables.parked_events} VALUES (?, ?, 1, '{{}}', 'boom', 't')",
            [(world.team, 7), (world.team, 8)],
        )
    try:
        metrics = world.client.get("/metrics").text
        assert "okr_processor_objectives_set_aside 1.0" in metrics
        assert "okr_processor_goal_events_parked 2.0" in metrics
    finally:
        with world.db.transaction() as cur:
            cur.execute(f"DELETE FROM {world.tables.set_aside}")
            cur.execute(f"DELETE FROM {world.tables.parked_events}")


def test_dashboard_page_is_served(world: World) -> None:
    r = world.client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")


def test_series_judges_each_bucket_by_the_target_in_force_then(world: World) -> None:
    """A retargeting applies from its occurred_at on: buckets that ended before it keep the
    status they had; the open bucket is judged by the new target."""
    kpi = world.seeder.kpi("acme", "Orders", target=100.0, amber=90.0, interval="day")
    today = world.now.replace(hour=0, minute=0, second=0, microsecond=0)
    world.seeder.readings(
        "acme",
        kpi,
        [(today - timedelta(days=d) + timedelta(hours=1), 80.0) for d in (1, 2, 3)]
        + [(max(today, world.now - timedelta(seconds=30)), 80.0)],
    )
    # Retargeted at the start of yesterday: yesterday and today fall under 60/50.
    world.seeder.event(
        events.KpiRetargeted, kpi, "acme", today - timedelta(days=1), target=60.0, amber=50.0
    )
    items = world.get(f"/v1/kpis/{kpi}/series").json()["items"]
    status = {item["bucket_start"][:10]: item["status"] for item in items}
    day = lambda d: (today - timedelta(days=d)).date().isoformat()  # noqa: E731
    assert status == {day(3): "red", day(2): "red", day(1): "green", day(0): "green"}


# -- a replay's swap ----------------------------------------------------------------------


def _swap_in_generation_2(world: World) -> None:
    """What a replay does (services/processor/replay.py): generation 2 (here generation 1's
    rows, objectives retitled) made live in one transaction, then generation 1's tables
    dropped in the next."""
    built = Tables(2)
    with world.db.transaction() as cur:
        write_lock(cur)
        create_tables(cur, built)
        for live, new in zip(world.tables.all(), built.all(), strict=True):
            cur.execute(f"INSERT INTO {new} SELECT * FROM {live}")
        cur.execute(f"UPDATE {built.objectives} SET title = title || ' (rebuilt)'")
        write_meta(cur, "generation", str(built.generation))
    with world.db.transaction() as cur:
        write_lock(cur)
        drop_tables(cur, world.tables)


def test_reads_right_after_a_replay_swap_answer_the_new_generation(world: World) -> None:
    """The live generation is read with the data: no 404, [] or 503 while a cached
    generation names dropped tables."""
    assert world.get(f"/v1/objectives/{world.company}").status_code == 200
    _swap_in_generation_2(world)
    r = world.get(f"/v1/objectives/{world.company}")
    assert r.status_code == 200, r.text
    assert r.json()["title"].endswith(" (rebuilt)")
    assert r.headers["X-Projection-Position"] == str(world.position)
    listed = world.get("/v1/objectives").json()["items"]
    assert world.company in [v["id"] for v in listed]
    waited = world.get(f"/v1/objectives/{world.company}", min_position=world.position)
    assert waited.status_code == 200, waited.text
    assert world.get(f"/v1/kpis/{world.kpi}/series").json()["items"]
    assert world.get("/v1/detections").json()["items"]


def test_a_read_the_swap_overtakes_is_read_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap and the drop commit after a read took its generation but before it touched
    a table. SQLite's snapshot still holds generation 1; PostgreSQL's catalog does not, so
    the read is run again over generation 2. Never a 404."""
    store = world.client.app.state.query_store  # type: ignore[attr-defined]
    position = store.position
    swapped = []

    def overtaken(cur, tables):  # type: ignore[no-untyped-def]
        if not swapped:
            swapped.append(tables.generation)
            _swap_in_generation_2(world)
        return position(cur, tables)

    monkeypatch.setattr(store, "position", overtaken)
    r = world.get(f"/v1/objectives/{world.company}")
    assert swapped == [1]
    assert r.status_code == 200, r.text
    assert r.headers["X-Projection-Position"] == str(world.position)
    rebuilt = r.json()["title"].endswith(" (rebuilt)")
    assert rebuilt is (world.db.dialect == "postgres")


# -- series ranges ------------------------------------------------------------------------


def test_series_range_selects_whole_utc_buckets(world: World) -> None:
    """from/to pick the buckets whose start lies between the buckets holding them, in UTC
    whatever the offset; a bucket is never cut."""
    kpi = world.seeder.kpi(
        "acme", "Weekly", interval="week", aggregation="sum", target=10.0, amber=9.0
    )
    world.seeder.readings(
        "acme",
        kpi,
        [(datetime(2026, 1, 13, 9, tzinfo=UTC), 5.0), (datetime(2026, 1, 16, 9, tzinfo=UTC), 6.0)],
    )
    week = [
        {"bucket_start": "2026-01-12T00:00:00.000000Z", "value": 11.0, "count": 2,
         "status": "green"}
    ]  # fmt: skip

    def series(**params: object) -> list[dict[str, object]]:
        r = world.get(f"/v1/kpis/{kpi}/series", **params)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    assert series() == week
    for to in (
        "2026-01-14T00:00:00Z",
        "2026-01-15T03:00:00Z",
        "2026-01-14T22:00:00-05:00",  # the same instant
        "2026-01-12T00:30:00Z",
        "2026-01-19T00:30:00+01:00",  # 2026-01-18T23:30Z: still that week
    ):
        assert series(to=to) == week, to
    for start in ("2026-01-12T00:00:00Z", "2026-01-18T23:59:59Z", "2026-01-18T20:00:00-03:00"):
        assert series(**{"from": start}) == week, start
    assert series(to="2026-01-12T00:30:00+01:00") == []  # 2026-01-11T23:30Z: the week before
    assert series(**{"from": "2026-01-18T23:00:00-05:00"}) == []  # 2026-01-19T04:00Z
    assert series(**{"from": "2026-01-14T00:00:00Z", "to": "2026-01-14T00:00:00Z"}) == week


# -- hostile input --------------------------------------------------------------------------


def _cursor(key: object) -> str:
    # json, not orjson: a client may write integers beyond 64 bits.
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def test_a_crafted_cursor_is_a_422_problem(world: World) -> None:
    """A cursor is opaque but not trusted: each element is checked for its endpoint."""
    history = f"/v1/objectives/{world.company}/history"
    events_ = f"/v1/objectives/{world.company}/events"
    series = f"/v1/kpis/{world.kpi}/series"
    day = (world.now - timedelta(days=3)).date().isoformat()
    for path, key in (
        (history, ["x"]),
        (history, [2**70]),
        (history, [1.5]),
        (history, [True]),
        (history, [-5]),
        (events_, [None]),
        (events_, [2**63]),
        (events_, ["1"]),
        ("/v1/objectives", [{"a": 1}]),
        ("/v1/objectives", [1]),
        ("/v1/objectives", ["a\x00b"]),
        ("/v1/detections", [[1], [2]]),
        ("/v1/detections", ["2026-01-01T00:00:00.000000Z", None]),
        ("/v1/detections", ["yesterday", world.detections[0]]),
        (series, [{"a": 1}]),
        (series, ["2026-02-30"]),
        (series, [day, day]),
        (series, [f"{day}T00:00:00Z"]),
    ):
        r = world.get(path, cursor=_cursor(key))
        assert r.status_code == 422, (path, key, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", (path, key)
        assert r.json()["errors"] == [{"loc": ["query", "cursor"], "msg": "not a cursor"}]
    # Well-formed keys still page.
    assert world.get(history, cursor=_cursor([1])).json()["items"]
    assert world.get(series, cursor=_cursor([day])).json()["items"]


def test_an_instant_out_of_range_in_utc_is_a_422_problem(world: World) -> None:
    """Aware instants whose UTC form is before year 1 or after year 9999."""
    objective, kpi = f"/v1/objectives/{world.company}", f"/v1/kpis/{world.kpi}"
    early, late = "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"
    for path, params in (
        (objective, {"as_of": early}),
        (objective, {"known_at": late}),
        (kpi, {"as_of": "0001-01-01T00:00:00+01:00"}),
        (f"{kpi}/series", {"from": "0001-01-01T00:00:00+01:00"}),
        (f"{kpi}/series", {"to": late}),
        (f"{objective}/history", {"to": late}),
        (f"{objective}/history", {"from": early}),
    ):
        r = world.get(path, **params)
        assert r.status_code == 422, (path, params, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", (path, params)
        name = next(iter(params))
        assert [e["loc"] for e in r.json()["errors"]] == [["query", name]], r.text
    # The extremes themselves are instants like any other.
    for path, params in (
        (objective, {"as_of": "9999-12-31T23:59:59.999999Z"}),
        (f"{kpi}/series", {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}),
        (f"{objective}/history", {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:00:00Z"}),
    ):
        assert world.get(path, **params).status_code == 200, (path, params)

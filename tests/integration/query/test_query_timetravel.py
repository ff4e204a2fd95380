"""as_of (valid time) and known_at (knowledge time) equal a replay of the log cut there."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

import events
from projections.kpi import Accumulator
from projections.objective import evaluate, fold, measure
from tests.integration.query.conftest import World

pytestmark = pytest.mark.integration

D = datetime(2026, 1, 1, tzinfo=UTC)


def _worked_example(world: World) -> dict[str, object]:
    """API.md's worked example, as events: KR A metric 100→50 checked in at 80, KR B
    milestone done, KR C weight 2 linked to a KPI (avg of readings 4 and 8), 0→10."""
    s = world.seeder
    kpi = s.kpi("acme", "Ratio", interval="week", aggregation="avg", created=D)
    oid = str(uuid4())
    a, b, c = str(uuid4()), str(uuid4()), str(uuid4())
    period = {"start": date(2026, 1, 1), "end": date(2026, 3, 31)}
    s.event(events.ObjectiveDrafted, oid, "acme", D, title="Worked", owner="ana",
            level="company", period=period)  # fmt: skip
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=a, title="A", kind="metric",
            start=100.0, target=50.0)  # fmt: skip
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=b, title="B", kind="milestone")
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=c, title="C", kind="metric",
            start=0.0, target=10.0, weight=2.0, kpi_id=kpi)  # fmt: skip
    s.event(events.KeyResultCheckedIn, oid, "acme", D + timedelta(days=20), kr_id=a,
            value=80.0, confidence=0.6)  # fmt: skip
    # Done on Feb 1st, but only recorded (imported) on Feb 20th.
    s.event(events.KeyResultCheckedIn, oid, "acme", D + timedelta(days=31),
            D + timedelta(days=50), kr_id=b, done=True)  # fmt: skip
    s.readings("acme", kpi, [(D + timedelta(days=10), 4.0)])
    s.readings(
        "acme", kpi, [(D + timedelta(days=30, hours=5), 8.0)], recorded=D + timedelta(days=60)
    )
    # Something later that as_of must not see.
    s.event(events.KeyResultRetargeted, oid, "acme", D + timedelta(days=70), kr_id=c, target=20.0)
    s.readings("acme", kpi, [(D + timedelta(days=70), 100.0)])
    # The objective row exists for tenancy/children lookups; the view comes from the events.
    with world.db.transaction() as cur:
        cur.execute(
            f"INSERT INTO {world.tables.objectives} (objective_id, org_id, title, owner, level,"
            " period_start, period_end, state, version, score, progress, rollup_score,"
            " expected, status, zone, policy_version, evaluated_at, created_at, updated_at,"
            " position) VALUES (?,?,?,?,?,?,?,?,?,0,0,0,0,'not_started','fail','v1',?,?,?,0)",
            (oid, "acme", "Worked", "ana", "company", "2026-01-01", "2026-03-31", "active",
             7, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z",
             "2026-01-01T00:00:00.000000Z"),
        )  # fmt: skip
    return {"oid": oid, "kpi": kpi, "a": a, "b": b, "c": c}


def test_as_of_gives_the_worked_example(world: World) -> None:
    ids = _worked_example(world)
    r = world.get(f"/v1/objectives/{ids['oid']}", as_of="2026-02-15T00:00:00Z")
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["score"] == pytest.approx(0.65)
    assert v["expected"] == pytest.approx(0.5)
    assert v["health"] == pytest.approx(1.3)
    assert v["status"] == "on_track"
    assert v["forecast"] == pytest.approx(1.0)
    assert v["zone"] == "commit"
    krs = {kr["id"]: kr for kr in v["key_results"]}
    assert krs[ids["a"]]["progress"] == pytest.approx(0.4)
    assert krs[ids["c"]]["current"] == pytest.approx(6.0)
    assert krs[ids["c"]]["target"] == 10.0  # the later retargeting is not in force yet
    assert krs[ids["a"]]["confidence"] == 0.6
    assert v["version"] == 6
    assert r.headers["ETag"] == '"6"'


def test_known_at_hides_what_was_recorded_later(world: World) -> None:
    ids = _worked_example(world)
    # Known on Feb 10th: B's done (recorded Feb 20th) and the reading 8 (recorded Mar 2nd)
    # were not known; evaluated at Feb 15th valid time.
    v = world.get(
        f"/v1/objectives/{ids['oid']}",
        as_of="2026-02-15T00:00:00Z",
        known_at="2026-02-10T00:00:00Z",
    ).json()
    krs = {kr["id"]: kr for kr in v["key_results"]}
    assert krs[ids["b"]]["score"] == 0.0
    assert krs[ids["c"]]["current"] == pytest.approx(4.0)
    assert v["score"] == pytest.approx((0.4 + 0 + 2 * 0.4) / 4)
    before = world.get(f"/v1/objectives/{ids['oid']}", as_of="2025-12-01T00:00:00Z")
    assert before.status_code == 404


@pytest.mark.parametrize("days", [5, 15, 25, 35, 45, 75, 95])
def test_as_of_equals_a_replay_cut_there(world: World, days: int) -> None:
    """The view as of T equals folding the stored log cut at T with projections/."""
    ids = _worked_example(world)
    at = D + timedelta(days=days, hours=3)
    with world.db.transaction(write=False) as cur:
        stream = [
            events.decode(body)
            for (body,) in cur.execute(
                f"SELECT body FROM {world.tables.goal_events} WHERE stream_id = ?"
                " ORDER BY stream_version",
                (ids["oid"],),
            ).fetchall()
        ]
        readings = cur.execute(
            f"SELECT value, observed_at, reading_id FROM {world.tables.readings} WHERE kpi_id = ?",
            (ids["kpi"],),
        ).fetchall()
    state = fold(e for e in stream if e.occurred_at <= at)
    assert state is not None
    days_acc: dict[date, Accumulator] = {}
    for value, observed, rid in readings:
        t = datetime.fromisoformat(observed.replace("Z", "+00:00"))
        if t <= at:
            days_acc[t.date()] = days_acc.get(t.date(), Accumulator.empty()).add(value, t, rid)
    m = measure(sorted(days_acc.items()), "avg", "week", state.period, at)
    expected, kr_scores = evaluate(state, {ids["c"]: m}, at)
    v = world.get(f"/v1/objectives/{ids['oid']}", as_of=at.isoformat()).json()
    assert v["score"] == expected.score
    assert v["progress"] == expected.progress
    assert v["status"] == expected.status
    assert v["forecast"] == expected.forecast
    assert {kr["id"]: kr["score"] for kr in v["key_results"]} == {
        k: s.score for k, s in kr_scores.items()
    }


def test_kpi_as_of(world: World) -> None:
    ids = _worked_example(world)
    v = world.get(f"/v1/kpis/{ids['kpi']}", as_of="2026-01-31T12:00:00Z").json()
    # Week of Mon Jan 26th: only the reading 8 (Jan 31st 05:00).
    assert v["current"] == 8.0
    assert v["status"] == "red"
    assert v["last_reading_at"].startswith("2026-01-31T05:00")
    assert v["stale"] is False
    stale = world.get(f"/v1/kpis/{ids['kpi']}", as_of="2026-03-01T00:00:00Z").json()
    assert stale["current"] is None
    assert stale["status"] == "no_data"
    assert stale["stale"] is True
    assert world.get(f"/v1/kpis/{ids['kpi']}", as_of="2025-01-01T00:00:00Z").status_code == 404


def test_as_of_now_matches_the_current_view(world: World) -> None:
    current = world.get(f"/v1/objectives/{world.company}").json()
    now = world.get(f"/v1/objectives/{world.company}", as_of=datetime.now(UTC).isoformat()).json()
    assert now["id"] == current["id"]
    assert now["version"] == current["version"]
    assert now["children"] == current["children"]
    assert [kr["id"] for kr in now["key_results"]] == [kr["id"] for kr in current["key_results"]]

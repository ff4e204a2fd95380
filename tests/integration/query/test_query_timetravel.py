"""as_of (valid time) and known_at (knowledge time) equal a replay of the log cut there."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TypeVar
from uuid import uuid4

import pytest

import events
from projections.kpi import Accumulator
from projections.objective import evaluate, fold_cut, measure
from services.projectionstore.schema import iso
from services.query import timetravel
from services.query.reads import Reads
from tests.integration.query.conftest import World

pytestmark = pytest.mark.integration

D = datetime(2026, 1, 1, tzinfo=UTC)
HOURS_5 = timedelta(hours=5)
T = TypeVar("T")


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
    state = fold_cut(e for e in stream if e.occurred_at <= at)
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
    assert v["policy_version"] == "v1"
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


PERIOD = {"start": date(2026, 1, 1), "end": date(2026, 3, 31)}


def _live_row(world: World, oid: str, version: int, parent_id: str | None = None) -> None:
    """The objective's row in the live view as the processor leaves it today."""
    with world.db.transaction() as cur:
        cur.execute(
            f"INSERT INTO {world.tables.objectives} (objective_id, org_id, title, owner, level,"
            " parent_id, period_start, period_end, state, version, score, progress,"
            " rollup_score, expected, status, zone, policy_version, evaluated_at, created_at,"
            " updated_at, position) VALUES"
            " (?,?,?,?,?,?,?,?,?,?,0,0,0,0,'not_started','fail','v1',?,?,?,0)",
            (oid, "acme", "O", "ana", "company", parent_id, "2026-01-01", "2026-03-31",
             "active", version, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z",
             "2026-01-01T00:00:00.000000Z"),
        )  # fmt: skip


def _daily_sum_objective(world: World) -> tuple[str, str]:
    """A daily sum KPI read 5 on Jan 1st 02:00Z, 1 on Jan 15th 02:00Z and 100 on Jan 15th
    22:00Z, and an objective whose one KR (0 → 200) is linked to it: (objective, kpi)."""
    s = world.seeder
    kpi = s.kpi("acme", "Orders", interval="day", aggregation="sum", created=D)
    s.readings("acme", kpi, [(datetime(2026, 1, 1, 2, tzinfo=UTC), 5.0),
                             (datetime(2026, 1, 15, 2, tzinfo=UTC), 1.0),
                             (datetime(2026, 1, 15, 22, tzinfo=UTC), 100.0)])  # fmt: skip
    oid = str(uuid4())
    s.event(events.ObjectiveDrafted, oid, "acme", D, title="O", owner="ana",
            level="company", period=PERIOD)  # fmt: skip
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=str(uuid4()), title="Orders",
            kind="metric", start=0.0, target=200.0, kpi_id=kpi)  # fmt: skip
    _live_row(world, oid, 2)
    return oid, kpi


def _at(world: World, read: Callable[[Reads], T]) -> T:
    """`read` over the world's store, called as the app calls it (any offset reaches the
    module when a caller other than the HTTP edge passes one)."""
    with world.db.transaction(write=False) as cur:
        return read(Reads(cur, world.tables, "acme", datetime.now(UTC)))


# One instant, Jan 15th 21:00Z (before the reading of 22:00Z), with three offsets.
JAN_15_2100Z = [
    datetime(2026, 1, 15, 21, tzinfo=UTC),
    datetime(2026, 1, 16, 2, tzinfo=timezone(HOURS_5)),
    datetime(2026, 1, 15, 16, tzinfo=timezone(-HOURS_5)),
]


@pytest.mark.parametrize("as_of", JAN_15_2100Z, ids=["Z", "+05", "-05"])
def test_as_of_with_any_offset_reads_the_same_utc_days(world: World, as_of: datetime) -> None:
    """Days and buckets are UTC days: the caller's offset must not move them."""
    oid, kpi = _daily_sum_objective(world)
    k = _at(world, lambda r: timetravel.kpi_at(r, kpi, as_of))
    assert k is not None
    assert k["current"] == 1.0  # Jan 15th's bucket holds only the reading of 02:00Z yet
    v = _at(world, lambda r: timetravel.objective_at(r, oid, as_of, None))
    assert v is not None
    assert v["key_results"][0]["current"] == 6.0  # 5 + 1
    assert v["score"] == pytest.approx(6.0 / 200)
    assert v["evaluated_at"] == "2026-01-15T21:00:00.000000Z"


@pytest.mark.parametrize(
    "known_at",
    [datetime(2026, 1, 1, 17, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=timezone(-HOURS_5))],
    ids=["Z", "-05"],
)
def test_known_at_with_any_offset_counts_the_periods_first_utc_day(
    world: World, known_at: datetime
) -> None:
    oid, _ = _daily_sum_objective(world)
    v = _at(world, lambda r: timetravel.objective_at(r, oid, None, known_at))
    assert v is not None
    assert v["key_results"][0]["current"] == 5.0  # the reading of Jan 1st 02:00Z


def test_as_of_counts_a_backdated_import_recorded_after_a_later_check_in(world: World) -> None:
    """Checked in 90 on Mar 1st (v3), then 40 imported as of Feb 1st (v4): as of Feb 15th
    the 40 is a fact (v3 is not yet), and the view reflects the stream up to v4."""
    s = world.seeder
    oid, kr = str(uuid4()), str(uuid4())
    s.event(events.ObjectiveDrafted, oid, "acme", D, title="O", owner="ana",
            level="company", period=PERIOD)  # fmt: skip
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=kr, title="A", kind="metric",
            start=0.0, target=100.0)  # fmt: skip
    march, february = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    s.event(events.KeyResultCheckedIn, oid, "acme", march, march, kr_id=kr, value=90.0)
    s.event(events.KeyResultCheckedIn, oid, "acme", february, march + timedelta(days=1),
            kr_id=kr, value=40.0)  # fmt: skip
    _live_row(world, oid, 4)
    r = world.get(f"/v1/objectives/{oid}", as_of="2026-02-15T00:00:00Z")
    v = r.json()
    assert v["version"] == 4
    assert r.headers["ETag"] == '"4"'
    assert v["key_results"][0]["current"] == 40.0
    assert v["score"] == pytest.approx(0.4)
    later = world.get(f"/v1/objectives/{oid}", as_of="2026-03-15T00:00:00Z").json()
    assert later["key_results"][0]["current"] == 90.0  # the latest by occurred_at
    before = world.get(f"/v1/objectives/{oid}", as_of="2026-01-15T00:00:00Z").json()
    assert before["version"] == 2
    assert before["key_results"][0]["current"] == 0.0


def test_as_of_children_follow_the_parent_links_of_the_cut(world: World) -> None:
    """C was drafted under P1 and realigned to P2 on Feb 20th (recorded Feb 25th); the live
    rows only know P2. As of Feb 15th (or known on Feb 22nd) C is P1's child. N, drafted
    under P1 on Mar 1st and never realigned, is its child from then on."""
    s = world.seeder
    p1, p2, c, n, kr = (str(uuid4()) for _ in range(5))
    for parent in (p1, p2):
        s.event(events.ObjectiveDrafted, parent, "acme", D, title="P", owner="ana",
                level="company", period=PERIOD)  # fmt: skip
        _live_row(world, parent, 1)
    s.event(events.ObjectiveDrafted, c, "acme", D, title="C", owner="bo", level="team",
            parent_id=p1, period=PERIOD)  # fmt: skip
    s.event(events.KeyResultAdded, c, "acme", D, kr_id=kr, title="M", kind="milestone")
    s.event(events.KeyResultCheckedIn, c, "acme", D + timedelta(days=10), kr_id=kr, done=True)
    s.event(events.ObjectiveRealigned, c, "acme", datetime(2026, 2, 20, tzinfo=UTC),
            datetime(2026, 2, 25, tzinfo=UTC), parent_id=p2)  # fmt: skip
    _live_row(world, c, 4, parent_id=p2)
    s.event(events.ObjectiveDrafted, n, "acme", datetime(2026, 3, 1, tzinfo=UTC), title="N",
            owner="cy", level="team", parent_id=p1, period=PERIOD)  # fmt: skip
    _live_row(world, n, 1, parent_id=p1)

    def children(oid: str, **at: str) -> tuple[list[str], float]:
        v = world.get(f"/v1/objectives/{oid}", **at).json()
        return v["children"], v["rollup_score"]

    feb_15 = {"as_of": "2026-02-15T00:00:00Z"}
    assert children(p1, **feb_15) == ([c], 1.0)
    assert children(p2, **feb_15) == ([], 0.0)
    known_feb_22 = {"known_at": "2026-02-22T00:00:00Z"}
    assert children(p1, **known_feb_22) == ([c], 1.0)
    assert children(p2, **known_feb_22) == ([], 0.0)
    mar_2 = {"as_of": "2026-03-02T00:00:00Z"}
    assert children(p1, **mar_2) == ([n], 0.0)
    assert children(p2, **mar_2) == ([c], 1.0)


def test_as_of_keeps_the_score_of_the_close_once_archived(world: World) -> None:
    """Closed on Feb 1st, archived on Feb 20th: a later cut still evaluates it at its close
    (the processor's rule), so readings after the close count neither closed nor archived."""
    s = world.seeder
    kpi = s.kpi("acme", "Deals", interval="day", aggregation="sum", created=D)
    s.readings("acme", kpi, [(datetime(2026, 1, 20, tzinfo=UTC), 40.0),
                             (datetime(2026, 2, 10, tzinfo=UTC), 50.0)])  # fmt: skip
    oid = str(uuid4())
    s.event(events.ObjectiveDrafted, oid, "acme", D, title="O", owner="ana",
            level="company", period=PERIOD)  # fmt: skip
    s.event(events.KeyResultAdded, oid, "acme", D, kr_id=str(uuid4()), title="Deals",
            kind="metric", start=0.0, target=100.0, kpi_id=kpi)  # fmt: skip
    closed_at = datetime(2026, 2, 1, tzinfo=UTC)
    s.event(events.ObjectiveClosed, oid, "acme", closed_at)
    s.event(events.ObjectiveArchived, oid, "acme", datetime(2026, 2, 20, tzinfo=UTC))
    _live_row(world, oid, 4)

    def view(as_of: str) -> dict[str, object]:
        v = world.get(f"/v1/objectives/{oid}", as_of=as_of).json()
        return {k: v[k] for k in ("state", "score", "expected", "status", "evaluated_at")} | {
            "current": v["key_results"][0]["current"]
        }

    closed, archived = view("2026-02-15T00:00:00Z"), view("2026-03-15T00:00:00Z")
    assert closed["state"] == "closed"
    assert archived["state"] == "archived"
    assert closed["current"] == archived["current"] == 40.0
    assert closed["score"] == archived["score"] == pytest.approx(0.4)
    assert archived["evaluated_at"] == closed["evaluated_at"] == iso(closed_at)
    assert archived["expected"] == closed["expected"]
    assert archived["status"] == closed["status"]


def _retargeted_kpi(world: World, aggregation: str = "sum") -> str:
    """A monthly KPI (increase, 100/90) retargeted to 10/5 a minute ago, then (an import,
    recorded after it) to 1000/900 as of two hours ago: 10/5 is the target in force now."""
    s = world.seeder
    kpi = s.kpi("acme", "Leads", interval="month", aggregation=aggregation,
                created=world.now - timedelta(days=400))  # fmt: skip
    s.event(events.KpiRetargeted, kpi, "acme", world.now - timedelta(minutes=1),
            target=10.0, amber=5.0)  # fmt: skip
    s.event(events.KpiRetargeted, kpi, "acme", world.now - timedelta(hours=2), world.now,
            target=1000.0, amber=900.0)  # fmt: skip
    # The row as the processor leaves it: the retargeting appended last.
    with world.db.transaction() as cur:
        cur.execute(
            f"UPDATE {world.tables.kpis} SET target = 1000, amber = 900, version = 3"
            " WHERE kpi_id = ?",
            (kpi,),
        )
    return kpi


def test_kpi_views_judge_by_the_target_in_force_by_valid_time(world: World) -> None:
    kpi = _retargeted_kpi(world)
    world.seeder.readings("acme", kpi, [(world.now, 50.0)])
    now = datetime.now(UTC).isoformat()
    live, as_of = world.get(f"/v1/kpis/{kpi}").json(), world.get(f"/v1/kpis/{kpi}", as_of=now)
    series = world.get(f"/v1/kpis/{kpi}/series").json()["items"]
    for v in (live, as_of.json()):
        assert (v["target"], v["amber"], v["current"], v["status"]) == (10.0, 5.0, 50.0, "green")
    assert series[-1]["status"] == "green"  # /series agrees
    # Two hours ago only the import (1000/900) was in force.
    before = world.get(
        f"/v1/kpis/{kpi}", as_of=(world.now - timedelta(minutes=30)).isoformat()
    ).json()
    assert (before["target"], before["amber"]) == (1000.0, 900.0)


def test_a_count_kpi_without_readings_in_its_bucket_has_no_data(world: World) -> None:
    """As the processor judges it (no kpi_breach): no value and status no_data, not 0 and
    red. A reading in an earlier month does not count for the current one."""
    s = world.seeder
    kpi = s.kpi("acme", "Deals closed", target=5.0, amber=4.0, interval="month",
                aggregation="count", created=world.now - timedelta(days=400))  # fmt: skip
    s.readings("acme", kpi, [(world.now - timedelta(days=80), 1.0)])
    now = datetime.now(UTC).isoformat()
    for v in (world.get(f"/v1/kpis/{kpi}").json(), world.get(f"/v1/kpis/{kpi}", as_of=now).json()):
        assert v["current"] is None
        assert v["status"] == "no_data"
    s.readings("acme", kpi, [(world.now, 1.0)])
    for v in (world.get(f"/v1/kpis/{kpi}").json(), world.get(f"/v1/kpis/{kpi}", as_of=now).json()):
        assert v["current"] == 1.0
        assert v["status"] == "red"  # one deal of five


def _chain(world: World, length: int) -> list[str]:
    """`length` objectives, each the child of the one before (ids root first); only the last
    has a key result, a done milestone. Written in one transaction (events and live rows)."""
    s = world.seeder
    ids = [str(uuid4()) for _ in range(length)]
    rows = []
    for parent, oid in zip([None, *ids], ids, strict=False):
        s.event(events.ObjectiveDrafted, oid, "acme", D, title="O", owner="ana",
                level="team", parent_id=parent, period=PERIOD)  # fmt: skip
        rows.append((oid, parent))
    kr = str(uuid4())
    s.event(events.KeyResultAdded, ids[-1], "acme", D, kr_id=kr, title="M", kind="milestone")
    s.event(events.KeyResultCheckedIn, ids[-1], "acme", D + timedelta(days=1), kr_id=kr, done=True)
    for oid, parent in rows:
        _live_row(world, oid, s.versions[oid], parent_id=parent)
    return ids


def test_as_of_rolls_up_as_deep_as_the_processor(world: World) -> None:
    """A chain of 1001 objectives with a done leaf: the processor rolls a change up 1000
    levels (MAX_ROLLUP_LEVELS), so does the view: from the second objective the leaf is in
    reach (1.0), from the root it is not (0.0). No level is cut earlier and the walk does not
    hit Python's recursion limit."""
    ids = _chain(world, 1001)
    mar_1 = "2026-03-01T00:00:00Z"
    second = world.get(f"/v1/objectives/{ids[1]}", as_of=mar_1).json()
    assert second["children"] == [ids[2]]
    assert second["rollup_score"] == 1.0
    root = world.get(f"/v1/objectives/{ids[0]}", as_of=mar_1).json()
    assert root["rollup_score"] == 0.0
    short = world.get(f"/v1/objectives/{ids[991]}", as_of=mar_1).json()  # ten levels
    assert short["rollup_score"] == 1.0


def test_as_of_visits_each_objective_once_in_a_parent_cycle_of_the_cut(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B was realigned under A on Feb 1st and back to the top on Mar 1st; then A was
    realigned under B as of Jan 20th (an import, no cycle today). As of Feb 15th A and B are
    each other's parent: the view ends, counting each once."""
    s = world.seeder
    a, b, kr = str(uuid4()), str(uuid4()), str(uuid4())
    for oid in (a, b):
        s.event(events.ObjectiveDrafted, oid, "acme", D, title="O", owner="ana",
                level="team", period=PERIOD)  # fmt: skip
    s.event(events.KeyResultAdded, b, "acme", D, kr_id=kr, title="M", kind="milestone")
    s.event(events.KeyResultCheckedIn, b, "acme", D + timedelta(days=1), kr_id=kr, done=True)
    s.event(events.ObjectiveRealigned, b, "acme", datetime(2026, 2, 1, tzinfo=UTC), parent_id=a)
    s.event(events.ObjectiveRealigned, b, "acme", datetime(2026, 3, 1, tzinfo=UTC),
            parent_id=None)  # fmt: skip
    s.event(events.ObjectiveRealigned, a, "acme", datetime(2026, 1, 20, tzinfo=UTC),
            datetime(2026, 3, 2, tzinfo=UTC), parent_id=b)  # fmt: skip
    _live_row(world, a, 2, parent_id=b)
    _live_row(world, b, 5)
    visited: list[str] = []
    own_view = timetravel._own_view

    def counted(r: Reads, oid: str, *cut: datetime | None) -> object:
        visited.append(oid)
        return own_view(r, oid, *cut)

    monkeypatch.setattr(timetravel, "_own_view", counted)
    v = world.get(f"/v1/objectives/{a}", as_of="2026-02-15T00:00:00Z").json()
    assert v["children"] == [b]
    assert v["rollup_score"] == 1.0
    assert visited == [a, b]

"""The processor's batch apply against a real SQLite file: order independence and
idempotent redelivery (a content hash of every table)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import detections as rules
from services.processor.digest import content_hash
from services.processor.projector import TICK_START, Projector
from services.processor.records import Notice, Watermark
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from services.projectionstore.schema import Tables
from tests.unit.processor.builders import Log, synthetic, to_row, worked_example

NOW = datetime(2026, 2, 15, tzinfo=UTC)


def projector(path: Path, now: datetime = NOW) -> Projector:
    db = Database("sqlite", path=path)
    ensure_schema(db)
    return Projector(db, clock=lambda: now)


def tables_hash(p: Projector, strict: bool = True) -> dict[str, str]:
    with p.db.transaction(write=False) as cur:
        return content_hash(cur, Tables(1), strict=strict)


def apply_all(p: Projector, log: Log, reading_chunks: list[list[int]] | None = None) -> None:
    goal = log.goal_items()
    rows = log.reading_rows()
    notices = []
    chunks = reading_chunks or [list(range(len(rows)))]
    for chunk in chunks:
        notices += p.apply_readings([rows[i] for i in chunk])
    p.apply_goal_batch(goal, notices)
    # Measurements after the goal events (the link now exists): what the topology does.
    p.apply_goal_batch([], p.apply_readings(rows))


def test_worked_example_rows(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    ids = worked_example(log)
    apply_all(p, log)
    with p.db.transaction(write=False) as cur:
        row = cur.execute(
            "SELECT score, progress, rollup_score, expected, health, status, forecast, zone"
            " FROM g1_objectives WHERE objective_id = ?",
            (str(ids["objective"]),),
        ).fetchone()
        current = cur.execute(
            "SELECT current, score FROM g1_key_results WHERE kr_id = ?", (str(ids["kr_c"]),)
        ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(0.65)
    assert row[2] == pytest.approx(0.65)
    assert row[3:] == (0.5, pytest.approx(1.3), "on_track", 1.0, "commit")
    assert current == (6.0, 0.6)


def test_redelivery_changes_nothing(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    worked_example(log)
    apply_all(p, log)
    first = tables_hash(p)
    apply_all(p, log)
    p.apply_goal_batch(log.goal_items()[2:5])
    assert tables_hash(p) == first


def test_rollup_follows_children(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    parent, child = uuid4(), uuid4()
    period = {"start": "2026-01-01", "end": "2026-03-31"}
    log.emit("objective.drafted", parent, title="P", owner="a", level="company", period=period)
    log.emit(
        "objective.drafted", child, title="C", owner="b", level="team", period=period,
        parent_id=parent,
    )  # fmt: skip
    kr = uuid4()
    log.emit("key_result.added", child, kr_id=kr, title="K", kind="milestone")
    p.apply_goal_batch(log.goal_items())
    n = len(log.entries)
    log.emit("key_result.checked_in", child, kr_id=kr, done=True)
    p.apply_goal_batch(log.goal_items()[n:])
    with p.db.transaction(write=False) as cur:
        rows = dict(cur.execute("SELECT objective_id, rollup_score FROM g1_objectives").fetchall())
    assert rows == {str(parent): 1.0, str(child): 1.0}


def test_rollup_climbs_every_level_when_parent_and_child_change_together(
    tmp_path: Path,
) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    top, middle, leaf, sibling = (uuid4() for _ in range(4))
    period = {"start": "2026-01-01", "end": "2026-03-31"}
    log.emit("objective.drafted", top, title="T", owner="a", level="company", period=period)
    for oid, parent in ((middle, top), (leaf, middle), (sibling, middle)):
        log.emit(
            "objective.drafted", oid, title="O", owner="b", level="team", period=period,
            parent_id=parent,
        )  # fmt: skip
    kr_middle, kr_leaf, kr_sibling = uuid4(), uuid4(), uuid4()
    log.emit("key_result.added", middle, kr_id=kr_middle, title="M", kind="milestone")
    log.emit("key_result.added", leaf, kr_id=kr_leaf, title="L", kind="milestone")
    log.emit("key_result.added", sibling, kr_id=kr_sibling, title="S", kind="milestone")
    p.apply_goal_batch(log.goal_items())
    n = len(log.entries)
    # One batch changes the leaf and its parent: the parent's rollup must use the leaf's new
    # value, and the top must follow both.
    log.emit("key_result.checked_in", leaf, kr_id=kr_leaf, done=True)
    log.emit("key_result.checked_in", middle, kr_id=kr_middle, done=True)
    p.apply_goal_batch(log.goal_items()[n:])
    with p.db.transaction(write=False) as cur:
        rows = dict(cur.execute("SELECT objective_id, rollup_score FROM g1_objectives").fetchall())
    # middle = mean(own 1, leaf 1, sibling 0); top has no key results: its child's rollup.
    assert rows == {
        str(leaf): 1.0,
        str(sibling): 0.0,
        str(middle): 2 / 3,
        str(top): 2 / 3,
    }


def test_a_restarted_projector_loads_snapshots_or_folds_and_computes_the_same(
    tmp_path: Path,
) -> None:
    log = Log()
    synthetic(log, objectives=30, kpis=3, readings=60)
    rows = log.reading_rows()
    reference = projector(tmp_path / "reference.sqlite")
    apply_all(reference, log)
    with reference.db.transaction(write=False) as cur:
        snapshots = cur.execute("SELECT COUNT(*) FROM g1_objective_states").fetchone()[0]
    assert snapshots == 30, "one snapshot per objective, at its last version"
    # Measurements for every objective, by a projector that cached nothing: states come
    # from the snapshots (or, once they are made unreadable, from folding the events).
    for unreadable in (False, True):
        path = tmp_path / f"restarted-{unreadable}.sqlite"
        first = projector(path)
        apply_all(first, log)
        with first.db.transaction() as cur:
            if unreadable:
                cur.execute("UPDATE g1_objective_states SET snapshot = '{\"id\": 1}'")
            else:  # nothing to fold: the states can only come from the snapshots
                cur.execute("DELETE FROM g1_goal_events")
        restarted = projector(path)
        restarted.apply_goal_batch([], restarted.apply_readings(rows))
        assert len(restarted._cache) == 30
        reference_copy = projector(tmp_path / f"reference-{unreadable}.sqlite")
        apply_all(reference_copy, log)
        reference_copy.apply_goal_batch([], reference_copy.apply_readings(rows))
        got, want = tables_hash(restarted), tables_hash(reference_copy)
        # (the damaged snapshots stay until their objectives change again)
        changed = "objective_states" if unreadable else "goal_events"
        got.pop(changed), want.pop(changed)
        assert got == want


def test_watermarks_are_monotonic(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    p.apply_readings([], [Watermark("kpi", "t", 0, -1, 7)])
    p.apply_readings([], [Watermark("kpi", "t", 0, -1, 3)])
    with p.db.transaction(write=False) as cur:
        assert cur.execute("SELECT position FROM g1_watermarks").fetchall() == [(7,)]


def _random_log(seed_values: list[float]) -> Log:
    log = Log()
    ids = worked_example(log)
    base = datetime(2026, 1, 2, tzinfo=UTC)
    for i, v in enumerate(seed_values):
        log.reading(ids["kpi"], v, base + timedelta(hours=7 * i), f"x{i}")
    return log


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=4),
)
def test_readings_in_any_order_and_batching_give_the_same_tables(
    values: list[float], rnd: object, pieces: int
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    with tempfile.TemporaryDirectory() as d:
        log = _random_log(values)
        n = len(log.reading_rows())
        reference = projector(Path(d) / "a.sqlite")
        apply_all(reference, log)
        order = list(range(n))
        rnd.shuffle(order)
        cuts = sorted(rnd.sample(range(1, n), min(pieces - 1, n - 1))) if n > 1 else []
        chunks = [order[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        shuffled = projector(Path(d) / "b.sqlite")
        apply_all(shuffled, log, chunks)
        # Duplicated readings inside and across batches count once.
        shuffled.apply_readings(log.reading_rows()[: n // 2] * 2)
        assert tables_hash(shuffled, strict=False) == tables_hash(reference, strict=False)


def test_kpi_notices_resolve_to_the_objectives_measuring_them(tmp_path: Path) -> None:
    """readings_in gives one notice per KPI and observed day, however many objectives it
    feeds; objectives_measuring gives each objective measuring one of them a notice carrying
    the latest cause of the days it measures: its period's (synthetic's readings run into
    2027, past the objectives' 2026) up to its close day for the closed ones (June 1)."""
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    _, kpis = synthetic(log, objectives=30, kpis=3, readings=300)
    p.apply_goal_batch(log.goal_items())
    rows = log.reading_rows()
    with p.transaction() as tx:
        kpi_notices = p.readings_in(tx, rows)
        resolved = p.objectives_measuring(tx, kpi_notices)
        linked = dict(
            tx.cur.execute(
                "SELECT objective_id, kpi_id FROM g1_key_results WHERE kpi_id IS NOT NULL"
            ).fetchall()
        )
        last_day = {
            oid: "2026-12-31" if state == "active" else closed_at[:10]
            for oid, state, closed_at in tx.cur.execute(
                "SELECT objective_id, state, closed_at FROM g1_objectives"
            ).fetchall()
        }
    days = {(n.kpi_id, n.day) for n in kpi_notices}
    assert days == {(r.kpi_id, r.observed_at[:10]) for r in rows}
    assert len(kpi_notices) == len(days)
    assert {n.kpi_id for n in kpi_notices} == {str(k) for k in kpis}
    assert any(n.day > "2026-12-31" for n in kpi_notices)
    assert "2026-06-01" in last_day.values()
    assert [n.objective_id for n in resolved] == sorted(linked)
    for n in resolved:
        in_period = [
            k
            for k in kpi_notices
            if k.kpi_id == linked[n.objective_id] and k.day <= last_day[n.objective_id]
        ]
        cause = max(in_period, key=lambda k: (k.occurred_at, k.event_id))
        assert (n.event_id, n.occurred_at) == (cause.event_id, cause.occurred_at)


def measuring(log: Log, objective: UUID, kpi: UUID, period: dict[str, str], title: str) -> UUID:
    """Draft `objective` for `period` with a metric key result on `kpi`; its id."""
    log.emit("objective.drafted", objective, title=title, owner="ana", level="team", period=period)
    kr = uuid4()
    log.emit(
        "key_result.added", objective, kr_id=kr, title=title, kind="metric",
        start=0.0, target=50.0, kpi_id=kpi,
    )  # fmt: skip
    return kr


def test_readings_notify_only_the_objectives_whose_period_holds_them(tmp_path: Path) -> None:
    """A KPI measured in four quarters' objectives: a batch of February, March and May
    readings notifies Q1 (caused by its latest, March's) and Q2 (by May's) and leaves Q3
    and Q4 alone, and the tables equal those of re-evaluating every objective measuring
    the KPI."""
    log = Log()
    kpi = uuid4()
    log.kpi(kpi, name="NPS", target=50.0, amber=40.0, interval="week", aggregation="avg")
    quarters = {}
    for q, (start, end) in enumerate(
        [("01-01", "03-31"), ("04-01", "06-30"), ("07-01", "09-30"), ("10-01", "12-31")], 1
    ):
        o = uuid4()
        quarters[q] = str(o)
        measuring(log, o, kpi, {"start": f"2026-{start}", "end": f"2026-{end}"}, f"Q{q}")
    feb = log.reading(kpi, 30.0, datetime(2026, 2, 10, 9, tzinfo=UTC), "feb")
    may = log.reading(kpi, 45.0, datetime(2026, 5, 4, 9, tzinfo=UTC), "may")
    # Q1's latest reading, though not the batch's last: Q1's cause.
    mar = log.reading(kpi, 35.0, datetime(2026, 3, 30, 9, tzinfo=UTC), "mar")
    july = datetime(2026, 7, 15, tzinfo=UTC)  # Q1 and Q2 are over, Q3 runs, Q4 is ahead
    skipping, everyone = (projector(tmp_path / f"{n}.sqlite", july) for n in ("a", "b"))
    for p in (skipping, everyone):
        p.apply_goal_batch(log.goal_items())
    before = _currents(skipping)
    notices = skipping.apply_readings(log.reading_rows())
    causes = {n.objective_id: n.event_id for n in notices}
    assert causes == {quarters[1]: str(mar.event_id), quarters[2]: str(may.event_id)}
    assert str(feb.event_id) not in causes.values()
    skipping.apply_goal_batch([], notices)
    everyone.apply_readings(log.reading_rows())
    everyone.apply_goal_batch(
        [], [Notice(o, str(may.event_id), july, july) for o in sorted(quarters.values())]
    )
    assert tables_hash(skipping, strict=False) == tables_hash(everyone, strict=False)
    current = _currents(skipping)
    assert current[quarters[1]] == pytest.approx(32.5)  # avg of February and March
    assert current[quarters[2]] == pytest.approx(45.0)
    assert [current[quarters[q]] for q in (3, 4)] == [before[quarters[q]] for q in (3, 4)]


def test_readings_after_an_objectives_close_day_leave_it_alone(tmp_path: Path) -> None:
    """A closed objective is evaluated at its close, so it measures the readings up to its
    close: a later day's reading does not notify it (its scores cannot change) until it is
    reopened, while one of its close day does (and counts only if observed by the close
    time). The tables equal those of re-evaluating both objectives."""
    log = Log()
    kpi, closing, running = uuid4(), uuid4(), uuid4()
    log.kpi(kpi, name="NPS", target=50.0, amber=40.0, interval="day", aggregation="avg")
    for o in (closing, running):
        measuring(log, o, kpi, {"start": "2026-01-01", "end": "2026-12-31"}, "NPS")
    log.emit("objective.closed", closing, at=datetime(2026, 5, 10, 12, tzinfo=UTC))
    log.reading(kpi, 30.0, datetime(2026, 5, 9, 9, tzinfo=UTC), "may9")
    late_that_day = log.reading(kpi, 40.0, datetime(2026, 5, 10, 18, tzinfo=UTC), "may10")
    june = log.reading(kpi, 45.0, datetime(2026, 6, 5, 9, tzinfo=UTC), "june")
    july = datetime(2026, 7, 15, tzinfo=UTC)
    skipping, everyone = (projector(tmp_path / f"{n}.sqlite", july) for n in ("a", "b"))
    for p in (skipping, everyone):
        p.apply_goal_batch(log.goal_items())
    notices = skipping.apply_readings(log.reading_rows())
    causes = {n.objective_id: n.event_id for n in notices}
    assert causes == {str(closing): str(late_that_day.event_id), str(running): str(june.event_id)}
    skipping.apply_goal_batch([], notices)
    everyone.apply_readings(log.reading_rows())
    everyone.apply_goal_batch(
        [], [Notice(str(o), str(june.event_id), july, july) for o in (closing, running)]
    )
    assert tables_hash(skipping, strict=False) == tables_hash(everyone, strict=False)
    # May 9 only: May 10's reading at 18:00 came after the close at 12:00.
    assert _currents(skipping)[str(closing)] == pytest.approx(30.0)

    log.reading(kpi, 50.0, datetime(2026, 6, 6, 9, tzinfo=UTC), "june6")
    notified = skipping.apply_readings(log.reading_rows()[-1:])
    assert [n.objective_id for n in notified] == [str(running)]
    skipping.apply_goal_batch([], notified)
    log.emit("objective.reopened", closing, at=july)
    skipping.apply_goal_batch(log.goal_items()[-1:])
    log.reading(kpi, 20.0, datetime(2026, 7, 1, 9, tzinfo=UTC), "july1")
    notified = skipping.apply_readings(log.reading_rows()[-1:])
    assert sorted(n.objective_id for n in notified) == sorted([str(closing), str(running)])


def _currents(p: Projector) -> dict[str, float | None]:
    """Each objective's key result's current value (one key result per objective)."""
    with p.db.transaction(write=False) as cur:
        return dict(cur.execute("SELECT objective_id, current FROM g1_key_results").fetchall())


def test_re_evaluation_in_slices_equals_one_transaction(tmp_path: Path) -> None:
    """The objective agent's slices (the first with the goal events, the watermarks with
    the last) give the tables of one transaction."""
    logs = []
    for name in ("one", "sliced"):
        log = Log()
        synthetic(log, objectives=25, kpis=4, readings=200)
        logs.append((projector(tmp_path / f"{name}.sqlite"), log))
    (one, log_one), (sliced, log_sliced) = logs
    mark = Watermark("measure", "okr.kr-measurements.v1", 0, 0, 99)
    for p, log in logs:
        p.apply_goal_batch(log.goal_items())
    one.apply_goal_batch([], one.apply_readings(log_one.reading_rows()), [mark])
    notices = sliced.apply_readings(log_sliced.reading_rows())
    assert len(notices) == 25
    for i in range(0, len(notices), 6):
        last = i + 6 >= len(notices)
        sliced.apply_goal_batch((), notices[i : i + 6], [mark] if last else ())
        with sliced.db.transaction(write=False) as cur:
            found = cur.execute("SELECT position FROM g1_watermarks").fetchall()
        assert found == ([(99,)] if last else [])
    assert tables_hash(sliced, strict=False) == tables_hash(one, strict=False)


def test_detection_raised_again_continues_its_version(tmp_path: Path) -> None:
    """red → green → red in the current bucket: raised (v1), resolved (v2), raised again
    (v3) as one detection, each change one event in the outbox."""
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    kpi = uuid4()
    log.kpi(kpi, target=100.0, amber=90.0, interval="day", aggregation="last")
    p.apply_goal_batch(log.goal_items())
    day = NOW.replace(hour=0)
    for hour, value in [(1, 10.0), (2, 200.0), (3, 10.0)]:
        p.apply_readings(
            [to_row(log.reading(kpi, value, day.replace(hour=hour), f"r{hour}"), None)]
        )
    with p.db.transaction(write=False) as cur:
        published = [
            orjson.loads(v)
            for (v,) in cur.execute("SELECT value FROM g1_outbox ORDER BY seq").fetchall()
        ]
        stored = cur.execute(
            "SELECT version, resolved_at FROM g1_detections WHERE kind = 'kpi_breach'"
        ).fetchall()
    breach = [(e["type"], e["stream_version"]) for e in published if e["kind"] == "kpi_breach"]
    assert breach == [
        ("detection.raised", 1),
        ("detection.resolved", 2),
        ("detection.raised", 3),
    ]
    assert [tuple(r) for r in stored] == [(3, None)]
    # Ids are derived, as they always were (uuid5), so a redelivery emits the same events.
    first = next(e for e in published if e["kind"] == "kpi_breach")
    name = f"acme|kpi_breach|{first['reason']}|kpi|{kpi}|{first['period']}"
    detection = uuid5(NAMESPACE_URL, "okrstream:detection:" + name)
    assert (first["stream_id"], first["event_id"]) == (
        str(detection),
        str(uuid5(NAMESPACE_URL, f"okrstream:detection-event:{detection}:1")),
    )


def test_a_backdated_kpi_retargeting_leaves_the_later_target_in_force(tmp_path: Path) -> None:
    """A history import records a retargeting dated before one already applied: the
    target in force now is still the later one (valid time), for the KPI row and its
    breach rule, as /series and key results judge. The last one recorded was used."""
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    kpi = uuid4()
    log.kpi(kpi, target=100.0, amber=90.0, interval="month", aggregation="sum")
    log.emit("kpi.retargeted", kpi, at=NOW - timedelta(minutes=1), target=10.0, amber=5.0)
    log.emit("kpi.retargeted", kpi, at=NOW - timedelta(hours=2), target=1000.0, amber=900.0)
    p.apply_goal_batch(log.goal_items()[:2])
    p.apply_goal_batch(log.goal_items()[2:])
    p.apply_readings([to_row(log.reading(kpi, 50.0, NOW - timedelta(seconds=5), "r"), None)])
    with p.db.transaction(write=False) as cur:
        row = cur.execute("SELECT target, amber, version FROM g1_kpis").fetchone()
        breaches = cur.execute(
            "SELECT reason FROM g1_detections WHERE kind = 'kpi_breach' AND resolved_at IS NULL"
        ).fetchall()
    assert tuple(row) == (10.0, 5.0, 3)
    assert breaches == [], "50 meets the target in force, 10"


def test_tick_in_chunks_equals_one_step_and_follows_the_clock(tmp_path: Path) -> None:
    """The time-driven tick, one transaction per chunk of subjects, writes what one
    transaction over every subject writes; and it is what turns time passing into
    detections (the period ended: over-reach/under-reach final; KPIs gone stale)."""
    log = Log()
    synthetic(log, objectives=25, kpis=4, readings=40)
    later = datetime(2027, 1, 15, tzinfo=UTC)  # the objectives' 2026 period has ended
    hashes = []
    for limit in (10_000, 3):
        p = projector(tmp_path / f"tick-{limit}.sqlite")
        apply_all(p, log)
        before = tables_hash(p)
        kinds_before = detection_reasons(p)
        p.clock = lambda: later
        after: tuple[str, str] | None = TICK_START
        steps = 0
        while after is not None:
            after = p.tick_step(after, limit)
            steps += 1
        got = tables_hash(p)
        assert got["objectives"] != before["objectives"], "expected progress follows time"
        reasons = detection_reasons(p)
        raised = {reason for reason, _ in reasons - kinds_before}
        assert {"final", "no_data"} <= raised
        hashes.append(got)
        # 25 objectives, of which the active ones in chunks of 3, then 4 KPIs in 2 chunks
        assert steps == (2 if limit == 10_000 else 1 + active_count(p) // 3 + 2)
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("limit", [10_000, 3])
def test_a_subject_whose_tick_fails_is_left_as_it_was_and_the_rest_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """A bug in the time-driven rules of one objective or one KPI: the tick does every other
    subject as a tick without the bug does (it used to raise, and the timer's exception
    crashed the worker every tick); the failing subject's rows, detections, change feed and
    outbox are as before the tick."""
    log = Log()
    synthetic(log, objectives=25, kpis=4, readings=40)
    later = datetime(2027, 1, 15, tzinfo=UTC)  # the 2026 periods have ended
    p, reference = projector(tmp_path / "p.sqlite"), projector(tmp_path / "ref.sqlite")
    for each in (p, reference):
        apply_all(each, log)
        each.clock = lambda: later
    before = detection_reasons(p)
    after: tuple[str, str] | None = TICK_START
    while after is not None:
        after = reference.tick_step(after, limit)
    ticked = detection_reasons(reference)
    new = sorted(s for _, s in ticked - before)
    with p.db.transaction(write=False) as cur:
        kpis = {str(k) for (k,) in cur.execute("SELECT kpi_id FROM g1_kpis").fetchall()}
    bad_objective = next(s for s in new if s not in kpis)
    bad_kpi = next(s for s in new if s in kpis)
    objective_findings, kpi_findings = rules.objective_findings, rules.kpi_findings

    def failing_objective(oid: str, *args: object) -> object:
        if oid == bad_objective:
            raise ZeroDivisionError("a bug in a rule")
        return objective_findings(oid, *args)  # type: ignore[arg-type]

    def failing_kpi(kpi_id: str, *args: object) -> object:
        if kpi_id == bad_kpi:
            raise ValueError("another bug")
        return kpi_findings(kpi_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(rules, "objective_findings", failing_objective)
    monkeypatch.setattr(rules, "kpi_findings", failing_kpi)
    evaluated = _evaluated(p, bad_objective)
    with p.db.transaction(write=False) as cur:
        marks = [
            cur.execute(f"SELECT MAX(seq) FROM g1_{t}").fetchone()[0] for t in ("changes", "outbox")
        ]
    after = TICK_START
    while after is not None:
        after = p.tick_step(after, limit)
    bad = {bad_objective, bad_kpi}
    assert detection_reasons(p) == (
        {d for d in ticked if d[1] not in bad} | {d for d in before if d[1] in bad}
    )
    assert _evaluated(p, bad_objective) == evaluated
    with p.db.transaction(write=False) as cur:
        fed, sent = (
            {
                str(s)
                for (s,) in cur.execute(f"SELECT {c} FROM g1_{t} WHERE seq > ?", (m,)).fetchall()
            }
            for c, t, m in zip(("subject_id", "key"), ("changes", "outbox"), marks, strict=True)
        )
    assert not bad & (fed | sent)
    assert set(new) - bad <= fed & sent


def detection_reasons(p: Projector) -> set[tuple[str, str]]:
    """(reason, subject id) of the active detections."""
    with p.db.transaction(write=False) as cur:
        return {
            (str(r), str(s))
            for r, s in cur.execute(
                "SELECT reason, subject_id FROM g1_detections WHERE resolved_at IS NULL"
            ).fetchall()
        }


def active_count(p: Projector) -> int:
    with p.db.transaction(write=False) as cur:
        n = cur.execute("SELECT COUNT(*) FROM g1_objectives WHERE state = 'active'").fetchone()
    return int(n[0])


def _evaluated(p: Projector, objective: object) -> tuple[str, float]:
    with p.db.transaction(write=False) as cur:
        row = cur.execute(
            "SELECT evaluated_at, score FROM g1_objectives WHERE objective_id = ?",
            (str(objective),),
        ).fetchone()
    assert row is not None
    return str(row[0]), float(row[1])


@pytest.mark.parametrize("cache_size", [20_000, 0], ids=["state-cached", "state-not-cached"])
def test_notices_of_readings_an_evaluation_already_counted_are_skipped(
    tmp_path: Path, cache_size: int
) -> None:
    """An objective is re-evaluated for a notice only when its last evaluation may not have
    counted the reading: a measured KPI changed since, or the reading is observed after the
    evaluation time. Otherwise the notice changes nothing (a pass that reached the objective
    after the reading was applied already counted it), also when the objective's state is
    not in the state cache (more objectives than it holds)."""
    clock = [NOW]
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: clock[0], cache_size=cache_size)
    log = Log()
    ids = worked_example(log)
    apply_all(p, log)
    first, score = _evaluated(p, ids["objective"])
    assert score == pytest.approx(0.65)
    notices = p.apply_readings(log.reading_rows())  # a redelivery: nothing new stored
    assert [n.objective_id for n in notices] == [str(ids["objective"])]
    clock[0] = NOW + timedelta(hours=1)
    p.apply_goal_batch([], notices)
    assert _evaluated(p, ids["objective"]) == (first, score)  # skipped

    # A new reading of the measured KPI: evaluated again, and it counts.
    log.reading(ids["kpi"], 10.0, NOW - timedelta(days=1), "r3")
    p.apply_goal_batch([], p.apply_readings(log.reading_rows()[-1:]))
    second, score = _evaluated(p, ids["objective"])
    assert second > first
    assert score == pytest.approx((0.4 + 1.0 + 2 * (22 / 3) / 10) / 4)

    # A reading observed after the evaluation time was not counted then: evaluated again
    # once the clock has passed it, even though no KPI changed in between.
    log.reading(ids["kpi"], 1.0, NOW + timedelta(days=2), "r4")
    late = p.apply_readings(log.reading_rows()[-1:])
    clock[0] = NOW + timedelta(days=1)
    p.apply_goal_batch([], late)
    third, unchanged = _evaluated(p, ids["objective"])
    assert (third > second, unchanged) == (True, pytest.approx(score))
    # Redelivered the same day: evaluated again, it would read the same days: skipped.
    clock[0] = NOW + timedelta(days=1, hours=1)
    p.apply_goal_batch([], late)
    assert _evaluated(p, ids["objective"]) == (third, unchanged)
    clock[0] = NOW + timedelta(days=3)
    p.apply_goal_batch([], late)
    fourth, counted = _evaluated(p, ids["objective"])
    assert fourth > third
    assert counted == pytest.approx((0.4 + 1.0 + 2 * (23 / 4) / 10) / 4)

    # A goal event is always applied and evaluated, whatever the notices say.
    clock[0] = NOW + timedelta(days=4)
    log.emit("key_result.checked_in", ids["objective"], kr_id=ids["kr_a"], value=60.0)
    p.apply_goal_batch(log.goal_items()[-1:], late)
    fifth, moved = _evaluated(p, ids["objective"])
    assert fifth > fourth
    assert moved > counted


def test_readings_notify_objectives_linked_since_by_another_worker(tmp_path: Path) -> None:
    """A worker keeps the map of which objectives measure each KPI across transactions; a
    key result linked (or unlinked) by another worker's goal events is seen by its next
    readings."""
    path = tmp_path / "p.sqlite"
    log = Log()
    kpi, first, second, kr = uuid4(), uuid4(), uuid4(), uuid4()
    log.kpi(kpi, name="NPS", target=50.0, amber=40.0, interval="day", aggregation="last")
    period = {"start": "2026-01-01", "end": "2026-03-31"}
    measuring(log, first, kpi, period, "A")
    log.emit("objective.drafted", second, title="O", owner="ana", level="team", period=period)
    readings, goals = projector(path), projector(path)
    goals.apply_goal_batch(log.goal_items())

    def notified(rid: str, day: int) -> list[str]:
        log.reading(kpi, 30.0, datetime(2026, 2, day, tzinfo=UTC), rid)
        return [n.objective_id for n in readings.apply_readings(log.reading_rows()[-1:])]

    assert notified("r1", 1) == [str(first)]
    log.emit(
        "key_result.added", second, kr_id=kr, title="B", kind="metric",
        start=0.0, target=50.0, kpi_id=kpi,
    )  # fmt: skip
    goals.apply_goal_batch(log.goal_items()[-1:])
    assert notified("r2", 2) == sorted([str(first), str(second)])
    log.emit("key_result.removed", second, kr_id=kr)
    goals.apply_goal_batch(log.goal_items()[-1:])
    assert notified("r3", 3) == [str(first)]


# A whole interleaving is one example: many random draws by design.
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow],
)
@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=2**16))
def test_workers_restarting_amid_any_interleaving_give_the_same_tables(
    rnd: object, seed: int
) -> None:
    """Two workers on one store, each restarted now and then (their caches of states,
    links and what each evaluation counted start empty), apply goal events, readings (some
    redelivered) and the notices in any interleaving and order, as time passes: once every
    notice is applied, the tables equal those of one ordered pass."""
    import random

    assert isinstance(rnd, random.Random)
    log = Log()
    synthetic(log, objectives=8, kpis=3, readings=120, seed=seed)
    goal, rows = log.goal_items(), log.reading_rows()
    clock = [datetime(2026, 11, 30, tzinfo=UTC)]

    def worker(path: Path) -> Projector:
        db = Database("sqlite", path=path)
        ensure_schema(db)
        return Projector(db, clock=lambda: clock[0])

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "live.sqlite"
        workers = [worker(path), worker(path)]
        pending: list[Notice] = []
        g = r = 0
        while g < len(goal) or r < len(rows) or pending:
            w = rnd.randrange(2)
            step = rnd.random()
            if step < 0.1:
                workers[w] = worker(path)
            elif step < 0.45 and r < len(rows):
                n = rnd.randint(1, 30)
                pending += workers[w].apply_readings(rows[r : r + n])
                if rnd.random() < 0.3:
                    pending += workers[w].apply_readings(rows[max(0, r - 5) : r + n])
                r += n
            else:
                k = rnd.randint(0, len(pending))
                taken, pending = pending[:k], pending[k:]
                rnd.shuffle(taken)
                n = rnd.randint(1, 10) if step < 0.75 else 0
                workers[w].apply_goal_batch(goal[g : g + n], taken)
                g += n
            clock[0] += timedelta(seconds=rnd.randint(0, 30))
        reference = worker(Path(d) / "reference.sqlite")
        reference.apply_goal_batch(goal)
        reference.apply_goal_batch([], reference.apply_readings(rows))
        assert tables_hash(workers[0], strict=False) == tables_hash(reference, strict=False)


def _readings_table(p: Projector) -> list[tuple[object, ...]]:
    with p.db.transaction(write=False) as cur:
        return cur.execute(
            "SELECT kpi_id, reading_id, value, observed_at, recorded_at FROM g1_readings"
            " ORDER BY kpi_id, reading_id"
        ).fetchall()


def test_readings_whose_keys_clash_are_all_kept_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The once-only key is a 64-bit hash of (kpi, reading id): two readings with one key
    are both stored (the later with a NULL key), and a redelivery of either adds nothing."""
    log = Log()
    synthetic(log, objectives=6, kpis=3, readings=60)
    rows = log.reading_rows()
    reference = projector(tmp_path / "a.sqlite")
    apply_all(reference, log)
    # Four keys for sixty readings: nearly every reading clashes with a stored one.
    monkeypatch.setattr(
        "services.projectionstore.readings.reading_key", lambda kpi, rid: hash((kpi, rid)) % 4
    )
    clashing = projector(tmp_path / "b.sqlite")
    apply_all(clashing, log, [list(range(0, 25)), list(range(20, 60))])
    clashing.apply_readings(rows[::-1] + rows[5:9])
    assert _readings_table(clashing) == _readings_table(reference)
    assert len(_readings_table(reference)) == len({(r.kpi_id, r.reading_id) for r in rows})
    with clashing.db.transaction(write=False) as cur:
        keys = cur.execute("SELECT reading_key FROM g1_readings").fetchall()
    assert sorted(k for (k,) in keys if k is not None) == [0, 1, 2, 3]
    assert tables_hash(clashing, strict=False) == tables_hash(reference, strict=False)


def test_a_full_days_cache_drops_its_oldest_kpis_and_computes_the_same(tmp_path: Path) -> None:
    log = Log()
    synthetic(log, objectives=8, kpis=6, readings=300)
    reference = projector(tmp_path / "a.sqlite")
    apply_all(reference, log, [list(range(i, i + 50)) for i in range(0, 300, 50)])
    small = projector(tmp_path / "b.sqlite")
    small.days_cache_size = 10  # a few KPIs' days: every batch evicts
    apply_all(small, log, [list(range(i, i + 50)) for i in range(0, 300, 50)])
    assert small._days_held == sum(len(d) for _, d in small._days_cache.values()) <= 10
    assert tables_hash(small) == tables_hash(reference)


def test_a_rolled_back_transaction_leaves_no_series_behind(tmp_path: Path) -> None:
    """A transaction that stored readings and evaluated with them, then rolled back (a
    replay's swap that failed), must not leave its prepared series in the cache: the next
    transaction reaches the same days_version with other readings."""
    log = Log()
    ids, kpis = synthetic(log, objectives=3, kpis=1, readings=0)
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    for i in range(6):
        log.reading(kpis[0], 10.0 * i, t0 + timedelta(days=i), f"a{i}")
    rolled_back = [to_row(log.reading(kpis[0], 900.0, t0, "rolled-back"), None)]
    later = [to_row(log.reading(kpis[0], 3.0, t0 + timedelta(days=1), "later"), None)]
    first = log.reading_rows()[:6]

    def evaluate_all(p: Projector, tx: object) -> None:
        p.goal_batch_in(tx, [], [Notice(str(o), "e", t0, t0) for o in ids])  # type: ignore[arg-type]

    p = projector(tmp_path / "p.sqlite")
    p.apply_goal_batch(log.goal_items())
    p.apply_readings(first)
    with p.transaction() as tx:
        evaluate_all(p, tx)

    def fail_after_evaluating() -> None:
        with p.transaction() as tx:
            p.readings_in(tx, rolled_back)
            evaluate_all(p, tx)
            raise RuntimeError("the swap failed")

    with pytest.raises(RuntimeError):
        fail_after_evaluating()
    p.apply_readings(later)
    with p.transaction() as tx:
        evaluate_all(p, tx)

    clean = projector(tmp_path / "clean.sqlite")
    clean.apply_goal_batch(log.goal_items())
    clean.apply_readings(first)
    clean.apply_readings(later)
    with clean.transaction() as tx:
        evaluate_all(clean, tx)
    assert tables_hash(p, strict=False) == tables_hash(clean, strict=False)

"""The objective agent's deferred re-evaluations against a real SQLite file: notices taken
in any number of takes are re-evaluated once per pass, to the tables of an evaluation on
the spot, and the measurement watermarks wait for the notices taken with and before them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.eventstore.store import EventStore
from services.processor.projector import Projector
from services.processor.records import Notice, Watermark
from services.processor.replay import rebuild
from services.projectionstore.db import Database, DatabaseUnavailableError
from services.projectionstore.meta import ensure_schema
from services.projectionstore.schema import iso
from services.settings import Settings
from tests.unit.processor.builders import Log, synthetic, worked_example
from tests.unit.processor.test_processor_projector import projector, tables_hash

T = datetime(2026, 2, 1, tzinfo=UTC)


def measure_mark(position: int, part: int = 0) -> Watermark:
    return Watermark("measure", "okr.kr-measurements.v1", part, 0, position)


def written_marks(p: Projector) -> dict[int, int]:
    """Written measurement watermarks: partition → position."""
    with p.db.transaction(write=False) as cur:
        return dict(
            cur.execute(
                "SELECT part, position FROM g1_watermarks WHERE stage = 'measure'"
            ).fetchall()
        )


def pending(p: Projector) -> dict[str, tuple[str, int]]:
    """Deferred notices: objective → (causing event id, seq)."""
    with p.db.transaction(write=False) as cur:
        rows = cur.execute("SELECT objective_id, event_id, seq FROM g1_pending_notices")
        return {o: (e, int(s)) for o, e, s in rows.fetchall()}


def run_pass(p: Projector, slice_size: int) -> int:
    """A pass as the app's timer runs it: slices up to the newest seq; returns how many."""
    upto, slices = p.pending_bound(), 0
    while upto is not None:
        _, more = p.evaluate_pending(upto, slice_size)
        slices += 1
        if not more:
            break
    return slices


def test_deferred_notices_evaluated_in_a_pass_give_the_tables_of_an_evaluation_at_once(
    tmp_path: Path,
) -> None:
    built = []
    for name in ("at_once", "deferred"):
        log = Log()
        synthetic(log, objectives=25, kpis=4, readings=300)
        p = projector(tmp_path / f"{name}.sqlite")
        p.apply_goal_batch(log.goal_items())
        built.append((p, log.reading_rows()))
    (at_once, rows_a), (deferred, rows_d) = built
    at_once.apply_goal_batch([], at_once.apply_readings(rows_a), [measure_mark(300)])
    # Three kpi batches, each take deferring the notices of one: the same objectives.
    for i, part in enumerate((rows_d[:100], rows_d[100:200], rows_d[200:])):
        notices = deferred.apply_readings(part)
        assert deferred.apply_goal_take([], notices, [measure_mark(100 * (i + 1))])
        assert written_marks(deferred) == {}, "held back by the notices still pending"
    assert len(pending(deferred)) == 25, "one pending notice per objective, however many takes"
    assert run_pass(deferred, slice_size=6) == 5
    assert pending(deferred) == {}
    assert written_marks(deferred) == {0: 300}
    assert tables_hash(deferred, strict=False) == tables_hash(at_once, strict=False)


def test_a_pending_notice_keeps_the_latest_cause_and_its_first_take(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    early, late = Notice("o", "e1", T, T), Notice("o", "e2", T + timedelta(hours=1), T)
    p.apply_goal_take([], [early], [])
    p.apply_goal_take([], [Notice("other", "e9", T, T)], [])
    p.apply_goal_take([], [late], [])
    assert pending(p) == {"o": ("e2", 1), "other": ("e9", 2)}
    p.apply_goal_take([], [early], [])  # an older cause, redelivered: the later one stays
    assert pending(p)["o"] == ("e2", 1)


def test_a_watermark_waits_for_the_notices_taken_with_and_before_it(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    objectives, _ = synthetic(log, objectives=3, kpis=1, readings=0)
    p.apply_goal_batch(log.goal_items())
    a, b, c = (str(o) for o in objectives)
    p.apply_goal_take([], [Notice(a, "e1", T, T)], [measure_mark(10, part=0)])
    p.apply_goal_take([], [Notice(b, "e2", T, T)], [measure_mark(20, part=1)])
    # a's notice comes again in a later take: still the first take's, so it holds mark 10.
    p.apply_goal_take([], [Notice(a, "e3", T + timedelta(minutes=1), T)], [])
    p.apply_goal_take([], [], [measure_mark(30, part=2)])
    assert written_marks(p) == {}
    upto = p.pending_bound()
    assert upto is not None
    assert p.evaluate_pending(upto, 1) == (1, True)  # a: the oldest first
    assert written_marks(p) == {0: 10}
    p.apply_goal_take([], [Notice(c, "e4", T, T)], [measure_mark(40, part=3)])
    assert p.evaluate_pending(upto, 1) == (1, False)  # b; c came after the pass began
    assert written_marks(p) == {0: 10, 1: 20, 2: 30}, "mark 40 waits for c"
    assert run_pass(p, slice_size=10) == 1
    assert written_marks(p) == {0: 10, 1: 20, 2: 30, 3: 40}


def test_a_watermark_with_nothing_pending_is_written_at_once(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    assert p.apply_goal_take([], [], [measure_mark(7)])
    assert written_marks(p) == {0: 7}
    assert p.pending_bound() is None


def test_goal_events_are_applied_at_once_and_their_watermarks_written(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    synthetic(log, objectives=2, kpis=1, readings=0)
    goal_mark = Watermark("goal", "okr.goal-events.v1", 0, -1, 5)
    assert not p.apply_goal_take(log.goal_items(), [], [goal_mark])
    with p.db.transaction(write=False) as cur:
        assert cur.execute("SELECT count(*) FROM g1_objectives").fetchone() == (2,)
        assert cur.execute("SELECT stage, position FROM g1_watermarks").fetchall() == [("goal", 5)]


def test_a_repeated_watermark_confirms_its_row_and_a_lower_one_changes_nothing(
    tmp_path: Path,
) -> None:
    # The relay repeats its watermark while the log stands still: the row's updated_at
    # (okr_processor_watermark_age_seconds) follows it, so an idle processor is not "behind".
    clock = [T]
    p = projector(tmp_path / "p.sqlite")
    p.clock = lambda: clock[0]

    def at(position: int, when: datetime) -> tuple[Any, ...] | None:
        clock[0] = when
        p.apply_readings([], [Watermark("kpi", "okr.kpi-readings.v1", 0, -1, position)])
        with p.db.transaction(write=False) as cur:
            return cur.execute("SELECT position, updated_at FROM g1_watermarks").fetchone()

    assert at(5, T) == (5, iso(T))
    assert at(5, T + timedelta(seconds=1)) == (5, iso(T + timedelta(seconds=1)))
    assert at(3, T + timedelta(seconds=2)) == (5, iso(T + timedelta(seconds=1)))
    assert at(6, T + timedelta(seconds=3)) == (6, iso(T + timedelta(seconds=3)))


def test_a_replay_carries_the_deferred_notices_and_their_watermarks_over(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    live = Projector(db, clock=lambda: T)
    live.apply_goal_take([], [Notice("o", "e1", T, T)], [measure_mark(10)])
    store = EventStore.from_settings(settings)
    try:
        stats = rebuild(db, store)
    finally:
        store.close()
    assert stats.generation == 2
    after = Projector(db, clock=lambda: T)
    assert after.pending_bound() == 1, "the live processor's next pass finds them"
    assert run_pass(after, slice_size=10) == 1
    with db.transaction(write=False) as cur:
        assert cur.execute("SELECT part, position FROM g2_watermarks").fetchall() == [(0, 10)]
    db.close()


class FailingOn(Projector):
    """A projector whose evaluation of one objective raises `error`."""

    def __init__(self, db: Database, objective: str, error: Exception) -> None:
        super().__init__(db, clock=lambda: T)
        self.objective, self.error = objective, error

    def goal_batch_in(self, tx: Any, items: Any, notices: Any) -> None:
        if any(n.objective_id == self.objective for n in notices):
            raise self.error
        super().goal_batch_in(tx, items, notices)


def test_an_objective_whose_evaluation_fails_is_set_aside_and_the_rest_flow(
    tmp_path: Path,
) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    objectives, _ = synthetic(log, objectives=3, kpis=1, readings=0)
    p.apply_goal_batch(log.goal_items())
    a, b, c = sorted(str(o) for o in objectives)
    failing = FailingOn(p.db, b, ValueError("an evaluation bug"))
    failing.apply_goal_take([], [Notice(o, f"e-{o}", T, T) for o in (a, b, c)], [measure_mark(9)])
    upto = failing.pending_bound()
    assert upto is not None
    with pytest.raises(ValueError):
        failing.evaluate_pending(upto, 10)
    assert len(pending(failing)) == 3, "the failed slice changed nothing"
    assert failing.set_aside_failing(upto, 10) == [b]
    assert pending(failing) == {}
    assert written_marks(failing) == {0: 9}, "b no longer holds the watermark back"
    with failing.db.transaction(write=False) as cur:
        evaluated = dict(
            cur.execute("SELECT objective_id, evaluated_at FROM g1_objectives").fetchall()
        )
    assert {o for o, at in evaluated.items() if at == iso(T)} == {a, c}
    # Listed with its notice and error; a starting processor (the fix deployed) tries it
    # again, and once it evaluates, it is off the list.
    with failing.db.transaction(write=False) as cur:
        ((oid, event_id, error),) = cur.execute(
            "SELECT objective_id, event_id, error FROM g1_set_aside"
        ).fetchall()
    assert (oid, event_id) == (b, f"e-{b}")
    assert "ValueError: an evaluation bug" in error
    fixed = projector(tmp_path / "p.sqlite", now=T + timedelta(hours=1))
    assert fixed.retry_set_aside() == 1
    assert pending(fixed) == {b: (f"e-{b}", 1)}
    assert run_pass(fixed, slice_size=10) == 1
    with fixed.db.transaction(write=False) as cur:
        assert cur.execute("SELECT COUNT(*) FROM g1_set_aside").fetchone() == (0,)
        (at,) = cur.execute(
            "SELECT evaluated_at FROM g1_objectives WHERE objective_id = ?", (b,)
        ).fetchone()
    assert at == iso(T + timedelta(hours=1))


def test_a_database_that_fails_sets_nothing_aside(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    failing = FailingOn(p.db, "o", DatabaseUnavailableError("disk I/O error"))
    failing.apply_goal_take([], [Notice("o", "e1", T, T)], [measure_mark(9)])
    with pytest.raises(DatabaseUnavailableError):
        failing.set_aside_failing(1, 10)
    assert pending(failing) == {"o": ("e1", 1)}
    assert written_marks(failing) == {}


def test_a_reading_of_tomorrow_counts_once_its_day_has_come(tmp_path: Path) -> None:
    """Readings may be observed up to 5 minutes ahead: one taken at 23:58 for 00:02 is left
    out of tonight's evaluation, kept for later, and counted by the first pass after the
    tick that sees its day come."""
    clock = [datetime(2026, 2, 14, 23, 58, tzinfo=UTC)]
    p = projector(tmp_path / "p.sqlite")
    p.clock = lambda: clock[0]
    log = Log()
    ids = worked_example(log)  # KR C: avg of the KPI's readings 4 and 8 (January, February)
    p.apply_goal_batch(log.goal_items())
    log.reading(ids["kpi"], 20.0, datetime(2026, 2, 15, 0, 2, tzinfo=UTC), "tomorrow")
    assert p.apply_goal_take([], p.apply_readings(log.reading_rows()), [measure_mark(9)])
    run_pass(p, slice_size=10)
    assert kr_current(p, ids["kr_c"]) == 6.0
    assert written_marks(p) == {0: 9}, "the reading is applied: nothing is held back"
    assert later(p) == {str(ids["objective"])}
    p.defer_due_later()  # still the 14th: not due
    assert pending(p) == {}
    clock[0] = datetime(2026, 2, 15, 0, 1, tzinfo=UTC)
    assert p.defer_due_later() == 1
    assert later(p) == set()
    run_pass(p, slice_size=10)
    # The processor measures whole days up to the evaluation's (Projector._already_counted).
    assert kr_current(p, ids["kr_c"]) == pytest.approx(32 / 3)


def kr_current(p: Projector, kr_id: object) -> float:
    with p.db.transaction(write=False) as cur:
        row = cur.execute(
            "SELECT current FROM g1_key_results WHERE kr_id = ?", (str(kr_id),)
        ).fetchone()
    assert row is not None
    return float(row[0])


def later(p: Projector) -> set[str]:
    with p.db.transaction(write=False) as cur:
        return {o for (o,) in cur.execute("SELECT objective_id FROM g1_later_notices").fetchall()}

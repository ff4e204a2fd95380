"""A key result measures the readings observed up to its evaluation time, not the whole UTC
day of it: a closed objective's final score ignores readings observed later on the day it
closed, in whatever order readings and the close arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4, uuid5

import pytest

from services.processor.projector import Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from services.projectionstore.schema import Tables
from services.query.reads import Reads
from services.query.timetravel import objective_at
from tests.unit.processor.builders import NS, Log

NOW = datetime(2026, 2, 15, 22, tzinfo=UTC)
CLOSED = datetime(2026, 2, 15, 10, tzinfo=UTC)


def _measuring(log: Log, aggregation: str, target: float) -> tuple[UUID, UUID]:
    """A KPI and a Q1 objective with a metric key result (0 to `target`) on it."""
    o, k, kr = uuid4(), uuid4(), uuid4()
    at = datetime(2026, 1, 5, tzinfo=UTC)
    log.kpi(k, target=10.0, amber=9.0, interval="day", aggregation=aggregation)
    log.emit(
        "objective.drafted", o, at=at, title="O", owner="ana", level="team",
        period={"start": "2026-01-01", "end": "2026-03-31"},
    )  # fmt: skip
    log.emit(
        "key_result.added", o, at=at, kr_id=kr, title="K", kind="metric", start=0.0,
        target=target, kpi_id=k,
    )  # fmt: skip
    return o, k


def _objective(log: Log, aggregation: str) -> None:
    o, k = _measuring(log, aggregation, 10.0)
    log.reading(k, 4.0, datetime(2026, 2, 15, 9, tzinfo=UTC), "before")
    log.reading(k, 10.0, datetime(2026, 2, 15, 20, tzinfo=UTC), "after")  # after the close
    log.emit("objective.closed", o, at=CLOSED)


def _final(path: Path, log: Log, late_reading_first: bool) -> tuple[object, ...]:
    db = Database("sqlite", path=path)
    ensure_schema(db)
    p = Projector(db, clock=lambda: NOW)
    rows = log.reading_rows()
    if late_reading_first:
        p.apply_goal_batch(log.goal_items(), p.apply_readings(rows))
    else:
        p.apply_goal_batch(log.goal_items(), p.apply_readings(rows[:1]))
        p.apply_goal_batch([], p.apply_readings(rows[1:]))
    with db.transaction(write=False) as cur:
        row = cur.execute("SELECT state, score FROM g1_objectives").fetchone()
        closure = cur.execute("SELECT score FROM g1_owner_closures").fetchone()
        scores = [s for (s,) in cur.execute("SELECT score FROM g1_score_history").fetchall()]
    db.close()
    return row, closure, max(scores)


@pytest.mark.parametrize("aggregation", ["last", "sum", "max"])
@pytest.mark.parametrize("late_reading_first", [False, True])
def test_a_closed_objective_ignores_readings_later_on_its_closing_day(
    tmp_path: Path, aggregation: str, late_reading_first: bool
) -> None:
    log = Log()
    _objective(log, aggregation)
    row, closure, highest = _final(tmp_path / "p.sqlite", log, late_reading_first)
    # Only the 09:00 reading (4 of 10) counts: the 20:00 one came after the close at 10:00.
    assert row == ("closed", pytest.approx(0.4))
    assert closure == (pytest.approx(0.4),)
    assert highest == pytest.approx(0.4), "no history row ever counted the later reading"


def _late(log: Log, kpi: UUID, value: float, observed: datetime, recorded: datetime) -> None:
    """A reading observed at `observed` that the event store recorded at `recorded`."""
    rid = f"late-{observed.isoformat()}-{recorded.isoformat()}"
    log.emit(
        "reading.recorded", uuid5(NS, rid), at=recorded, kpi_id=kpi, value=value,
        observed_at=observed, reading_id=rid,
    )  # fmt: skip


def _view(p: Projector, db: Database, oid: UUID) -> tuple[object, float, set[tuple[str, str]]]:
    with db.transaction(write=False) as cur:
        row = cur.execute(
            "SELECT state, score FROM g1_objectives WHERE objective_id = ?", (str(oid),)
        ).fetchone()
        final = [s for (s,) in cur.execute("SELECT score FROM g1_score_history").fetchall()]
        kinds = {
            (k, r)
            for k, r in cur.execute(
                "SELECT kind, reason FROM g1_detections WHERE subject_type = 'objective'"
                " AND resolved_at IS NULL"
            ).fetchall()
        }
    return row, final[-1], kinds


@pytest.mark.parametrize("aggregation", ["sum", "last", "max"])
@pytest.mark.parametrize("close_first", [True, False])
def test_a_closed_objective_ignores_readings_recorded_after_its_close(
    tmp_path: Path, aggregation: str, close_first: bool
) -> None:
    """API.md: closing fixes the final score. A backdated reading recorded after the close
    (an import) raised a closed objective from 0.2 to 1.0 and flipped its final detections;
    one recorded before the close counts, even when the processor applies it after."""
    log = Log()
    o, k = _measuring(log, aggregation, 100.0)
    log.reading(k, 20.0, datetime(2026, 2, 3, 9, tzinfo=UTC), "known")
    # Recorded before the close (in flight when it was applied): counts.
    _late(log, k, 10.0, datetime(2026, 2, 10, tzinfo=UTC), CLOSED - timedelta(minutes=1))
    log.emit("objective.closed", o, at=CLOSED)
    # Recorded after the close, observed before it: on a day with known readings, on a
    # day without, and on the closing day before the close.
    _late(log, k, 200.0, datetime(2026, 2, 3, 12, tzinfo=UTC), CLOSED + timedelta(days=1))
    _late(log, k, 300.0, datetime(2026, 2, 5, tzinfo=UTC), CLOSED + timedelta(days=1))
    _late(log, k, 400.0, datetime(2026, 2, 15, 8, tzinfo=UTC), CLOSED + timedelta(hours=1))

    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: NOW)
    goals, rows = log.goal_items(), log.reading_rows()
    known, late = rows[:1], rows[1:]  # the in-flight one is applied with the late ones
    if close_first:
        p.apply_goal_batch(goals, p.apply_readings(known))
        p.apply_goal_batch([], p.apply_readings(late))
    else:
        p.apply_goal_batch([], p.apply_readings(rows))
        p.apply_goal_batch(goals, [])
    expected = {"sum": 0.3, "last": 0.1, "max": 0.2}[aggregation]  # 20 and 10 only
    row, final, kinds = _view(p, db, o)
    assert row == ("closed", pytest.approx(expected))
    assert final == pytest.approx(expected)
    assert ("over_reach", "final") in kinds
    assert ("under_reach", "final") not in kinds

    # The as_of view agrees, before and after the late readings were recorded.
    with db.transaction(write=False) as cur:
        reads = Reads(cur, Tables(1), "acme", NOW)
        for as_of in (CLOSED + timedelta(hours=2), NOW):
            view = objective_at(reads, str(o), as_of, None)
            assert view is not None
            assert view["score"] == pytest.approx(expected)
    db.close()


def test_an_imported_close_counts_the_readings_recorded_before_it_was(tmp_path: Path) -> None:
    """A close imported with an earlier occurred_at (history brought in afterwards) counts
    the readings recorded before the close was recorded, though after its valid time; a
    replay gave such objectives 0 when the cut was the valid time."""
    log = Log()
    o, k = _measuring(log, "sum", 100.0)
    imported = datetime(2026, 4, 20, tzinfo=UTC)  # when the history was brought in
    _late(log, k, 50.0, datetime(2026, 2, 3, tzinfo=UTC), imported)
    log.emit("objective.closed", o, at=CLOSED, recorded_at=imported + timedelta(hours=1))
    _late(log, k, 40.0, datetime(2026, 2, 4, tzinfo=UTC), imported + timedelta(days=1))

    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: datetime(2026, 5, 1, tzinfo=UTC))
    p.apply_goal_batch(log.goal_items(), p.apply_readings(log.reading_rows()))
    row, final, _ = _view(p, db, o)
    assert row == ("closed", pytest.approx(0.5))  # the 50, not the 40 recorded later
    assert final == pytest.approx(0.5)
    with db.transaction(write=False) as cur:
        reads = Reads(cur, Tables(1), "acme", datetime(2026, 5, 1, tzinfo=UTC))
        view = objective_at(reads, str(o), datetime(2026, 4, 30, tzinfo=UTC), None)
        assert view is not None
        assert view["score"] == pytest.approx(0.5)
    db.close()

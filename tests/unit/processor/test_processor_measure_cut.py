"""A key result measures the readings observed up to its evaluation time, not the whole UTC
day of it: a closed objective's final score ignores readings observed later on the day it
closed, in whatever order readings and the close arrive."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from services.processor.projector import Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from tests.unit.processor.builders import Log

NOW = datetime(2026, 2, 15, 22, tzinfo=UTC)
CLOSED = datetime(2026, 2, 15, 10, tzinfo=UTC)


def _objective(log: Log, aggregation: str) -> None:
    o, k, kr = uuid4(), uuid4(), uuid4()
    at = datetime(2026, 1, 5, tzinfo=UTC)
    log.kpi(k, target=10.0, amber=9.0, interval="day", aggregation=aggregation)
    log.emit(
        "objective.drafted", o, at=at, title="O", owner="ana", level="team",
        period={"start": "2026-01-01", "end": "2026-03-31"},
    )  # fmt: skip
    log.emit(
        "key_result.added", o, at=at, kr_id=kr, title="K", kind="metric", start=0.0,
        target=10.0, kpi_id=k,
    )  # fmt: skip
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

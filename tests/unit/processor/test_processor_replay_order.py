"""A replay applies the log in its order: a goal event's history row counts the readings
recorded before it and none after, whatever the size of the build's chunks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from services.eventstore.store import EventStore
from services.processor.replay import rebuild
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from services.settings import Settings
from tests.unit.processor.builders import Log

DAY = datetime(2026, 1, 20, tzinfo=UTC)


def _log() -> tuple[Log, str]:
    """A KPI-linked key result (avg, target 10), a reading of 10, a milestone key result
    added, then a reading of 2: the milestone's row scores (10/10 + 0) / 2 = 0.5."""
    log = Log()
    kpi, objective = uuid4(), uuid4()
    log.kpi(kpi, target=10.0, amber=9.0, interval="day", aggregation="avg")
    period = {"start": "2026-01-01", "end": "2026-03-31"}
    log.emit("objective.drafted", objective, title="O", owner="ana", level="team", period=period)
    log.emit(
        "key_result.added", objective, kr_id=uuid4(), title="A", kind="metric", start=0.0,
        target=10.0, kpi_id=kpi,
    )  # fmt: skip
    log.reading(kpi, 10.0, DAY, "r1")
    log.emit("key_result.added", objective, kr_id=uuid4(), title="B", kind="milestone")
    log.reading(kpi, 2.0, DAY.replace(hour=1), "r2")
    return log, str(objective)


def _history(settings: Settings, chunk: int) -> list[tuple[str, float]]:
    log, objective = _log()
    store = EventStore.from_settings(settings)
    db = Database.from_settings(settings, settings.projections_db_path)
    try:
        store.append([e for _, e in log.entries])
        ensure_schema(db)
        stats = rebuild(db, store, chunk=chunk)
        with db.transaction(write=False) as cur:
            rows = cur.execute(
                f"SELECT event_type, score FROM g{stats.generation}_score_history"
                " WHERE objective_id = ? ORDER BY seq",
                (objective,),
            ).fetchall()
    finally:
        store.close()
        db.close()
    return [(str(t), float(s)) for t, s in rows]


@pytest.mark.parametrize("chunk", [1, 2, 3, 20_000])
def test_goal_events_count_the_readings_before_them_only(tmp_path: Path, chunk: int) -> None:
    history = _history(Settings(data_dir=tmp_path / "data"), chunk)
    # The first key result is added before any reading (0), the milestone after the first
    # reading only (0.5); the build's last evaluation counts both readings (0.3).
    assert history == [
        ("objective.drafted", 0.0),
        ("key_result.added", 0.0),
        ("key_result.added", 0.5),
        ("reading.recorded", 0.3),
    ]

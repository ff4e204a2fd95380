"""`okrstream replay` keeps the readings that are not in the event store's log: those
produced straight to okr.kpi-readings.v1 (by integrations in either ingest mode, by ingest
itself with OKR_INGEST_MODE=kafka), including the ones the live processor applies while the
build runs. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest

from contracts.readings import reading_stream_id
from services.eventstore.store import EventStore
from services.processor import replay
from services.processor.digest import content_hash
from services.processor.projector import Projector
from services.processor.records import ReadingRow, direct_reading
from services.processor.replay import carry_over, rebuild
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema, live_generation
from services.projectionstore.schema import Tables
from services.settings import Settings
from tests.unit.processor.builders import Log, synthetic


def direct(kpi: UUID, value: float, observed_at: str, rid: str | None = None) -> ReadingRow:
    """A reading as the processor takes it from an integration's record."""
    body: dict[str, Any] = {
        "kpi_id": str(kpi),
        "org_id": "acme",
        "value": value,
        "observed_at": observed_at,
    }
    if rid is not None:
        body["reading_id"] = rid
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return direct_reading(orjson.dumps(body), now, lambda _: ("acme", "active"))


def settle(p: Projector, readings: Sequence[ReadingRow]) -> None:
    """Apply readings as the kpi agent does, then the pass over their notices."""
    p.apply_goal_take([], p.apply_readings(readings), [])
    while p.evaluate_pending(10**12, 1_000)[1]:
        pass


def live_hash(db: Database) -> dict[str, str]:
    with db.transaction(write=False) as cur:
        return content_hash(cur, Tables(live_generation(cur)))


def stored(db: Database, kpi: UUID) -> dict[str, tuple[float, str]]:
    with db.transaction(write=False) as cur:
        t = Tables(live_generation(cur))
        rows = cur.execute(
            f"SELECT reading_id, value, observed_at FROM {t.readings} WHERE kpi_id = ?",
            (str(kpi),),
        ).fetchall()
    return {str(r): (float(v), str(o)) for r, v, o in rows}


class Interleaved:
    """replay.carry_over, with the live processor applying `late` readings right after the
    build's own scan of the live generation (before the swap): what a processor consuming
    Kafka does while a replay runs. `at_swap` is the live generation's hash then."""

    def __init__(self, live: Projector, late: Sequence[ReadingRow]) -> None:
        self.live = live
        self.late = list(late)
        self.at_swap: dict[str, str] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        carried = carry_over(*args, **kwargs)
        if self.late:
            settle(self.live, self.late)
            self.late = []
            self.at_swap = live_hash(self.live.db)
        return carried


def test_replay_keeps_readings_sent_straight_to_kafka(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log()
    _, kpis = synthetic(log, objectives=8, kpis=3, readings=60)
    store = EventStore.from_settings(settings)
    store.append([e for _, e in log.entries])
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    try:
        live = Projector(db)
        live.apply_goal_take(log.goal_items(), [], [])
        log_rows = log.reading_rows()
        settle(live, log_rows)
        first = log_rows[0]
        sent = [
            direct(kpis[0], 7.5, "2026-03-01T10:00:00Z", "k1"),
            direct(kpis[0], 9.0, "2026-03-01T10:00:00Z", "k2"),  # the same instant
            direct(kpis[1], 1.25, "2026-05-02T00:00:00Z"),  # its reading id derived
            # A reading id the log holds, sent again straight to Kafka with another time:
            # the log's reading was applied first, and stays.
            direct(UUID(first.kpi_id), 99.0, "2026-02-01T00:00:00Z", first.reading_id),
        ]
        settle(live, sent)
        before_late = stored(db, kpis[2])
        late = [direct(kpis[2], 4.0, "2026-06-01T12:00:00Z", "late")]
        source = Interleaved(live, late)
        monkeypatch.setattr(replay, "carry_over", source)
        stats = replay.rebuild(db, store)

        assert stats.generation == 2
        assert stats.carried == 4, "three sent straight to Kafka, and the late one"
        assert stored(db, kpis[0])["k1"] == (7.5, "2026-03-01T10:00:00.000000Z")
        assert stored(db, kpis[0])["k2"] == (9.0, "2026-03-01T10:00:00.000000Z")
        assert sent[2].reading_id in stored(db, kpis[1])
        assert stored(db, kpis[2]) == {**before_late, "late": (4.0, "2026-06-01T12:00:00.000000Z")}
        assert stored(db, UUID(first.kpi_id))[first.reading_id] == (first.value, first.observed_at)
        # Scores, KPI days, detections: the generation swapped in equals the one it
        # replaced, as it was at the swap.
        assert source.at_swap, "the late readings were applied live during the build"
        assert live_hash(db) == source.at_swap
        assert late[0].event_id == str(reading_stream_id("acme", kpis[2], "late"))
    finally:
        db.close()
        store.close()


def test_replay_equals_the_live_generation_it_replaces(settings: Settings) -> None:
    """Readings from the log and straight from Kafka, in one live generation: a rebuild
    gives the same projection rows (the content hash of every table)."""
    log = Log()
    _, kpis = synthetic(log, objectives=12, kpis=4, readings=120)
    store = EventStore.from_settings(settings)
    store.append([e for _, e in log.entries])
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    try:
        live = Projector(db)
        live.apply_goal_take(log.goal_items(), [], [])
        sent = [
            direct(kpis[i % 4], float(i), f"2026-0{1 + i % 9}-1{i % 10}T0{i % 10}:00:00Z", f"d{i}")
            for i in range(40)
        ]
        settle(live, sent[:20] + log.reading_rows() + sent[20:])
        before = live_hash(db)
        stats = rebuild(db, store)
        assert stats.carried == 40
        assert live_hash(db) == before
    finally:
        db.close()
        store.close()

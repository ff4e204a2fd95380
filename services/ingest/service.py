"""Accepting a batch of readings: judge, then either insert the new ones in one store
transaction (ingest_mode store) or produce them to Kafka and wait for the acks (kafka)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from services.eventstore import EventStore
from services.ingest.kafka_sink import KafkaReadingsSink, reading_records
from services.ingest.kpis import KpiDirectory, KpiFacts
from services.ingest.readings import judge


def _kpi_ids(items: Sequence[Any]) -> set[UUID]:
    """The KPI ids the readings of a batch name (what judge will look up; an id it reads
    otherwise is looked up on its own)."""
    texts = {i.get("kpi_id") for i in items if isinstance(i, dict)}
    ids: set[UUID] = set()
    for text in texts:
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                ids.add(UUID(text))
    return ids


class ReadingsService:
    """POST /v1/readings without HTTP: the answer body of a judged, committed batch."""

    def __init__(
        self,
        store: EventStore,
        sink: KafkaReadingsSink | None = None,
        *,
        readings_per_record: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.clock = clock
        self.kpis = KpiDirectory(store)
        self.sink = sink
        self.readings_per_record = readings_per_record

    def accept(self, org_id: str, items: Sequence[Any]) -> dict[str, Any]:
        """Judge `items`, store the new valid ones atomically; {accepted, duplicates,
        rejected, position}. Raises StoreUnavailableError when nothing could be stored
        (KafkaUnavailableError in kafka mode)."""
        known = self.kpis.lookup_many(_kpi_ids(items))

        def lookup(kpi_id: UUID) -> KpiFacts | None:
            return known[kpi_id] if kpi_id in known else self.kpis.lookup(kpi_id)

        judged = judge(org_id, items, lookup, self.clock())
        if self.sink is not None:
            return self._to_kafka(judged)
        positions = self.store.append_new_encoded(judged.rows)
        stored = [p for p in positions if p is not None]
        return {
            "accepted": len(stored),
            "duplicates": judged.duplicates + len(positions) - len(stored),
            "rejected": judged.rejected,
            "position": max(stored) if stored else self.store.max_position(),
        }

    def _to_kafka(self, judged: Any) -> dict[str, Any]:
        """Kafka mode: the readings have no store position. `duplicates` counts repeats
        within the batch; a reading sent again later is published again with the same
        event id and applied once by the processor. `position` is the store's (goal
        events) position: min_position read-your-writes does not cover these readings."""
        assert self.sink is not None
        states = [row[3] for row in judged.rows]
        self.sink.send(
            reading_records(judged.kpi_ids, states, self.readings_per_record, self.sink.partitions)
        )
        return {
            "accepted": len(states),
            "duplicates": judged.duplicates,
            "rejected": judged.rejected,
            "position": self.store.max_position(),
        }

"""Accepting a batch of readings: judge, then either insert the new ones in one store
transaction (ingest_mode store) or produce them to Kafka and wait for the acks (kafka)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from services.eventstore import EventStore
from services.ingest.kafka_sink import KafkaReadingsSink, reading_records
from services.ingest.kpis import KpiDirectory
from services.ingest.readings import judge


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
        judged = judge(org_id, items, self.kpis.lookup, self.clock())
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

"""Accepting a batch of readings: judge, insert the new ones in one transaction, answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.eventstore import EventStore
from services.ingest.kpis import KpiDirectory
from services.ingest.readings import judge


class ReadingsService:
    """POST /v1/readings without HTTP: the answer body of a judged, committed batch."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.kpis = KpiDirectory(store)

    def accept(self, org_id: str, items: Sequence[Any]) -> dict[str, Any]:
        """Judge `items`, store the new valid ones atomically; {accepted, duplicates,
        rejected, position}. Raises StoreUnavailableError when nothing could be stored."""
        judged = judge(org_id, items, self.kpis.lookup, datetime.now(UTC))
        positions = self.store.append_new_encoded(judged.rows)
        stored = [p for p in positions if p is not None]
        return {
            "accepted": len(stored),
            "duplicates": judged.duplicates + len(positions) - len(stored),
            "rejected": judged.rejected,
            "position": max(stored) if stored else self.store.max_position(),
        }

"""What ingest knows about KPIs: exists, organisation, retired. The event store is the truth.

An in-process cache of KPI streams, read on a miss and refreshed incrementally once an entry
is older than REFRESH_S (so a retirement is honoured within that time). Unknown ids are
remembered only briefly: the KPI may be defined a moment later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import events
from services.eventstore import EventStore

REFRESH_S = 2.0
UNKNOWN_TTL_S = 0.5
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class KpiFacts:
    org_id: str
    retired: bool
    version: int


def apply(facts: KpiFacts | None, stream: list[events.Event]) -> KpiFacts | None:
    """Facts after more of a stream's events (None when it is not a KPI stream)."""
    for event in stream:
        if facts is None:
            if not isinstance(event, events.KpiDefined):
                return None
            facts = KpiFacts(event.org_id, False, event.stream_version)
        else:
            retired = facts.retired or isinstance(event, events.KpiRetired)
            facts = KpiFacts(facts.org_id, retired, event.stream_version)
    return facts


class KpiDirectory:
    """KPI facts by id, cached in process and read from the event store on a miss."""

    def __init__(self, store: EventStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._known: dict[UUID, tuple[float, KpiFacts]] = {}
        self._unknown: dict[UUID, float] = {}
        self._lock = threading.Lock()

    def lookup(self, kpi_id: UUID) -> KpiFacts | None:
        now = self.clock()
        with self._lock:
            hit = self._known.get(kpi_id)
            missed_at = self._unknown.get(kpi_id)
        if hit is not None:
            checked, facts = hit
            if now - checked < REFRESH_S or facts.retired:
                return facts
            newer = self.store.read_stream(kpi_id, gt=facts.version)
            facts = apply(facts, newer) or facts
        elif missed_at is not None and now - missed_at < UNKNOWN_TTL_S:
            return None
        else:
            found = apply(None, self.store.read_stream(kpi_id))
            if found is None:
                with self._lock:
                    if len(self._unknown) > MAX_ENTRIES:
                        self._unknown.clear()
                    self._unknown[kpi_id] = now
                return None
            facts = found
        with self._lock:
            if len(self._known) > MAX_ENTRIES:
                self._known.clear()
            self._known[kpi_id] = (now, facts)
            self._unknown.pop(kpi_id, None)
        return facts

"""What ingest knows about KPIs: exists, organisation, retired. The event store is the truth.

An in-process cache of KPI streams: a KPI's organisation never changes and a retirement is
final, so a retired KPI is answered from the cache. A request's live and unknown KPIs are
checked against the store in one read of their streams' newest versions
(`lookup_many`), and only a stream that moved is read: a retirement whose answer a client
has seen is honoured by every later request, in every front-door process. An unknown id is
not remembered: the KPI may be defined a moment later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

import events
from services.eventstore import EventStore

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
    """KPI facts by id, cached in process and brought up to date from the event store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._known: dict[UUID, KpiFacts] = {}
        self._lock = threading.Lock()

    def lookup_many(self, kpi_ids: Iterable[UUID]) -> dict[UUID, KpiFacts | None]:
        """`lookup` of each of `kpi_ids`, with one read of their streams' heads."""
        found: dict[UUID, KpiFacts | None] = {}
        check: list[UUID] = []
        with self._lock:
            for kpi_id in kpi_ids:
                cached = self._known.get(kpi_id)
                if cached is not None and cached.retired:
                    found[kpi_id] = cached
                else:
                    check.append(kpi_id)
        heads = self.store.stream_heads(check) if check else {}
        for kpi_id in check:
            with self._lock:
                cached = self._known.get(kpi_id)
            head = heads.get(kpi_id)
            if head is None:
                found[kpi_id] = None
            elif cached is not None and cached.version >= head:
                found[kpi_id] = cached
            else:
                found[kpi_id] = self.lookup(kpi_id)
        return found

    def lookup(self, kpi_id: UUID) -> KpiFacts | None:
        with self._lock:
            cached = self._known.get(kpi_id)
        if cached is not None and cached.retired:
            return cached
        if cached is None:
            facts = apply(None, self.store.read_stream(kpi_id))
        else:
            facts = apply(cached, self.store.read_stream(kpi_id, gt=cached.version))
        if facts is None:
            return None
        with self._lock:
            if len(self._known) > MAX_ENTRIES:
                self._known.clear()
            self._known[kpi_id] = facts
        return facts

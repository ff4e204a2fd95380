"""`okrstream audit verify` and `okrstream audit export --objective ID`.

Both read the event store itself (not the projections): an auditor checks the source of
truth. verify walks every stream's hash chain and names the first broken link; export
prints an objective's events as JSON lines (canonical JSON, envelope and hashes included).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from uuid import UUID

import events
from services.eventstore import EventStore
from services.settings import load_settings

PAGE = 1000


def _stream_ids(store: EventStore) -> Iterator[UUID]:
    after: UUID | None = None
    while True:
        page = store.stream_ids(after=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


def check_stream(store: EventStore, stream_id: UUID) -> str | None:
    """None when the stream's chain holds, else a description of its first broken link."""
    decoded: list[events.Event] = []
    for stored in store.recorder.select_events(stream_id):
        try:
            decoded.append(events.decode(stored.state))
        except events.EventDecodeError as exc:
            return (
                f"stream {stream_id} version {stored.originator_version}: "
                f"the stored event does not decode ({str(exc)[:200]})"
            )
    broken = events.verify_chain(decoded)
    return None if broken is None else str(broken)


def verify_store(store: EventStore) -> tuple[int, str | None]:
    """(streams checked, first broken link or None)."""
    checked = 0
    for stream_id in _stream_ids(store):
        checked += 1
        broken = check_stream(store, stream_id)
        if broken is not None:
            return checked, broken
    return checked, None


def verify() -> int:
    """Exit status 0 when every stream's hash chain holds; 1 naming the first broken link."""
    store = EventStore.from_settings(load_settings())
    try:
        checked, broken = verify_store(store)
    finally:
        store.close()
    if broken is not None:
        print(f"okrstream audit: BROKEN {broken}", file=sys.stderr)
        return 1
    print(f"okrstream audit: {checked} streams verified, every hash chain holds")
    return 0


def export(objective_id: str) -> int:
    """Print the objective's events in order, one canonical JSON object per line."""
    try:
        stream_id = UUID(objective_id)
    except ValueError:
        print(f"okrstream audit: {objective_id!r} is not an objective id", file=sys.stderr)
        return 1
    store = EventStore.from_settings(load_settings())
    try:
        stream = store.read_stream(stream_id)
    finally:
        store.close()
    if not stream or not isinstance(stream[0], events.ObjectiveDrafted):
        print(f"okrstream audit: no objective {objective_id} (404)", file=sys.stderr)
        return 1
    out = sys.stdout
    for event in stream:
        out.write(events.encode(event).decode() + "\n")
    out.flush()
    return 0

"""The tamper-evident hash chain of a stream.

hash = sha256 over the canonical JSON of the event without its `hash` field; `prev_hash`
is the previous event's hash in the same stream (None for the first). Changing any byte,
dropping an event or reordering two breaks the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import orjson

from events.envelope import Event

E = TypeVar("E", bound=Event)


def canonical_bytes(event: Event) -> bytes:
    """Canonical JSON of the event without its `hash` field."""
    data = event.model_dump(mode="json", exclude={"hash"})
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def compute_hash(event: Event) -> str:
    """Hex sha256 of the event's canonical bytes (its own `hash` excluded)."""
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def seal(event: E, prev_hash: str | None) -> E:
    """A copy of `event` linked to `prev_hash` and carrying its own hash."""
    linked = event.model_copy(update={"prev_hash": prev_hash, "hash": None})
    return linked.model_copy(update={"hash": compute_hash(linked)})


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of a stream: where and why."""

    stream_id: UUID
    stream_version: int
    event_id: UUID
    reason: str

    def __str__(self) -> str:
        return (
            f"stream {self.stream_id} version {self.stream_version} "
            f"(event {self.event_id}): {self.reason}"
        )


def verify_chain(events: Iterable[Event]) -> ChainBreak | None:
    """Check one stream's events, in stored order. None when the chain holds."""
    prev_hash: str | None = None
    expected_version = 1
    stream_id: UUID | None = None
    for event in events:

        def broken(reason: str, event: Event = event) -> ChainBreak:
            return ChainBreak(event.stream_id, event.stream_version, event.event_id, reason)

        if stream_id is None:
            stream_id = event.stream_id
        elif event.stream_id != stream_id:
            return broken(f"belongs to another stream than {stream_id}")
        if event.stream_version != expected_version:
            return broken(f"expected stream_version {expected_version}")
        if event.prev_hash != prev_hash:
            return broken("prev_hash does not match the previous event's hash")
        if event.hash != compute_hash(event):
            return broken("hash does not match the event's content")
        prev_hash = event.hash
        expected_version += 1
    return None

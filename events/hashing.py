"""Tamper evidence: the hash chain of each stream and the seals of the whole log.

**Stream chains.** hash = sha256 over the canonical JSON (keys sorted, no whitespace, UTF-8)
of the event *as stored* without its `hash` field; `prev_hash` is the previous event's hash
in the same stream (None for the first). The hash is over the stored form, at the schema
version it was written with: an old event read back through `decode()` is upcast, and the
upcast form no longer hashes to its `hash` (verify_stored_stream checks stored JSON). A
stream's chain shows a changed byte, an event dropped from the middle of the stream or two
events swapped, and (checked against the row it is stored under) an event relabelled with
another stream id, version or type. It cannot show that a stream's newest events, or the
whole stream, were removed: every remaining event still links. The log seals show that.

**Log seals.** The store's notification log gives every event a global position. Each
write transaction ends by sealing the log: a seal (position P, digest D, base B) where

    D = sha256("okrstream log seal v1\\0" ‖ previous seal's D ‖ frame(e) for each entry e
               with previous seal's P < position ≤ P, in position order)

(the first seal continues LOG_GENESIS and covers the entries after B), and a frame commits
to all the store keeps of an entry: position, stream id, stream version, type and the stored
bytes. verify_log recomputes every seal from the log. What that guarantees:

- an entry at or before the newest seal that was changed, removed, moved or inserted breaks
  the seal covering it, unless every seal from there on was recomputed too (the seals carry
  no secret: whoever can rewrite the store and knows this scheme can forge them);
- so the newest events removed *together with their seals*, or a forged set of seals, are
  detected only against a head noted outside the store: `audit verify` prints the newest
  seal as the head `P:D`; checked later with an expected head, any change to the log up to
  P is detected, whatever else was rewritten. Publishing heads (a ticket, an email, a
  transparency log) is what turns evidence against careless tampering into evidence
  against anyone who controls the database;
- entries at positions ≤ B predate the first seal (a store written by a release before
  log seals): they are "not anchored", covered by their stream chains only;
- entries after the newest seal (an append committed a moment before its seal, or a
  writer that does not seal) are counted, never taken as tampering.

Positions may have gaps on PostgreSQL (a sequence value taken by a rolled-back insert, or by
a duplicate that ON CONFLICT skipped, is never reused): the seals chain the entries that
exist, so a gap alone is never a finding; an entry missing from a sealed range is.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
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


def stored_hash(data: Mapping[str, Any]) -> str:
    """Hex sha256 of a stored event's JSON object without its `hash` key, encoded as
    canonical JSON: the rule `seal` applies, here over the stored (not upcast) form."""
    unsealed = {key: value for key, value in data.items() if key != "hash"}
    return hashlib.sha256(orjson.dumps(unsealed, option=orjson.OPT_SORT_KEYS)).hexdigest()


def seal(event: E, prev_hash: str | None) -> E:
    """A copy of `event` linked to `prev_hash` and carrying its own hash."""
    linked = event.model_copy(update={"prev_hash": prev_hash, "hash": None})
    return linked.model_copy(update={"hash": compute_hash(linked)})


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of a stream: where and why."""

    stream_id: UUID
    stream_version: int
    event_id: UUID | None  # None when the stored event has no readable id
    reason: str

    def __str__(self) -> str:
        event = f" (event {self.event_id})" if self.event_id is not None else ""
        return f"stream {self.stream_id} version {self.stream_version}{event}: {self.reason}"


def verify_chain(events: Iterable[Event]) -> ChainBreak | None:
    """Check one stream's decoded events, in stored order. None when the chain holds.

    For events of the current schema version only: an upcast event no longer hashes to its
    stored hash. Audits check what is stored, with verify_stored_stream."""
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


StoredRow = tuple[int, str, bytes]
"""One stored event of a stream: (stream version, type, JSON bytes) as the row keeps them."""


def _uuid_or_none(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def verify_stored_stream(stream_id: UUID, rows: Iterable[StoredRow]) -> ChainBreak | None:
    """Check one stream as stored, rows in version order. None when the chain holds.

    Each event's JSON must name the stream, version and type its row is stored under; the
    versions must run 1, 2, 3…; each `prev_hash` must be the previous event's `hash`; each
    `hash` must be stored_hash of the event's stored JSON (before any upcasting)."""
    expected_version = 1
    prev_hash: object = None
    for version, type_name, state in rows:

        def broken(reason: str, event_id: UUID | None = None, version: int = version) -> ChainBreak:
            return ChainBreak(stream_id, version, event_id, reason)

        try:
            data = orjson.loads(state)
        except orjson.JSONDecodeError as exc:
            return broken(f"the stored event is not JSON ({exc})")
        if not isinstance(data, dict):
            return broken("the stored event is not a JSON object")
        event_id = _uuid_or_none(data.get("event_id"))
        if _uuid_or_none(data.get("stream_id")) != stream_id:
            return broken(
                f"stored in stream {stream_id} but its JSON says stream {data.get('stream_id')!r}",
                event_id,
            )
        json_version = data.get("stream_version")
        if type(json_version) is not int or json_version != version:
            return broken(
                f"stored as version {version} but its JSON says version {json_version!r}",
                event_id,
            )
        if data.get("type") != type_name:
            return broken(
                f"stored as type {type_name!r} but its JSON says {data.get('type')!r}", event_id
            )
        if version != expected_version:
            return broken(f"expected stream_version {expected_version}", event_id)
        if data.get("prev_hash") != prev_hash:
            return broken("prev_hash does not match the previous event's hash", event_id)
        try:
            rehashed = stored_hash(data)
        except orjson.JSONEncodeError as exc:
            return broken(f"the stored event cannot be re-encoded ({exc})", event_id)
        if data.get("hash") != rehashed:
            return broken("hash does not match the event's content", event_id)
        prev_hash = data.get("hash")
        expected_version += 1
    return None


# -- log seals -------------------------------------------------------------------------------

LOG_GENESIS = "0" * 64
"""The digest a store's first seal continues."""

LogEntry = tuple[int, str, int, str, bytes]
"""One entry of the notification log: (position, stream id, stream version, type, stored
bytes), the stream id as the store returns it (32 hex digits)."""

_SEAL_DOMAIN = b"okrstream log seal v1\x00"
_FRAME = struct.Struct(">qqIII")  # position, stream version, then the lengths of the rest


class _SealHasher:
    """The running digest of one seal's range."""

    __slots__ = ("_hash",)

    def __init__(self, prev_digest: str) -> None:
        self._hash = hashlib.sha256(_SEAL_DOMAIN)
        self._hash.update(prev_digest.encode())

    def feed(self, entry: LogEntry) -> None:
        position, stream, version, type_name, state = entry
        stream_bytes, type_bytes = stream.encode(), type_name.encode()
        frame = _FRAME.pack(position, version, len(stream_bytes), len(type_bytes), len(state))
        self._hash.update(frame + stream_bytes + type_bytes)
        self._hash.update(state)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def seal_digest(prev_digest: str, entries: Iterable[LogEntry]) -> str:
    """The digest of a seal over `entries` (in position order) after a seal of `prev_digest`
    (LOG_GENESIS for a store's first seal)."""
    hasher = _SealHasher(prev_digest)
    for entry in entries:
        hasher.feed(entry)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class LogSeal:
    """The log sealed up to `position`: `digest` chains every entry after `base` up to it."""

    position: int
    digest: str
    base: int  # entries at positions ≤ base predate the store's first seal


def next_seal(last: LogSeal | None, entries: Sequence[LogEntry], base: int) -> LogSeal | None:
    """The seal of `entries`: every entry after the `last` seal, in position order (None
    when there is none). `base` applies when there is no seal yet: the entries at positions
    ≤ base predate sealing and stay out of the chain."""
    if not entries:
        return None
    if last is None:
        return LogSeal(entries[-1][0], seal_digest(LOG_GENESIS, entries), base)
    return LogSeal(entries[-1][0], seal_digest(last.digest, entries), last.base)


@dataclass(frozen=True, slots=True)
class LogHead:
    """A seal as an auditor notes it down: `position:digest`."""

    position: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> LogHead:
        """`P:D` with P a position and D 64 hex digits; ValueError otherwise."""
        position, sep, digest = text.strip().partition(":")
        digest = digest.lower()
        hex_digits = len(digest) == 64 and set(digest) <= set("0123456789abcdef")
        if not sep or not position.isdigit() or not hex_digits:
            raise ValueError(f"{text!r} is not a head POSITION:DIGEST (64 hex digits)")
        return cls(int(position), digest)

    def __str__(self) -> str:
        return f"{self.position}:{self.digest}"


@dataclass(frozen=True, slots=True)
class LogReport:
    """What verify_log found: `broken` is None when every seal holds."""

    entries: int  # log entries read
    seals: int  # seals that hold
    base: int | None  # entries at positions ≤ base are not anchored; None: there is no seal
    unanchored: int  # entries at positions ≤ base (every entry when there is no seal)
    head: LogSeal | None  # the newest seal that holds
    unsealed: int  # entries after the newest seal
    last_position: int  # the log's last position read (0: empty)
    broken: str | None


def verify_log(
    entries: Iterable[LogEntry], seals: Iterable[LogSeal], expect: LogHead | None = None
) -> LogReport:
    """Recompute every seal from the log's entries (both in position order).

    `expect`, a head noted earlier, must be one of the seals, holding, with the same digest:
    otherwise the log up to it, or its seals, were rewritten since."""
    walk = _LogWalk(iter(seals), expect)
    try:
        for entry in entries:
            walk.add(entry)
        walk.finish()
    except _BrokenError as exc:
        return walk.report(str(exc))
    return walk.report(None)


class _BrokenError(Exception):
    pass


class _LogWalk:
    """verify_log's state: the seal being recomputed and what has been read so far."""

    def __init__(self, seals: Iterator[LogSeal], expect: LogHead | None) -> None:
        self.seals = seals
        self.expect = expect
        self.expect_met = False
        self.current = next(seals, None)  # the seal whose range the next entries fall in
        # A store that started empty holds the genesis seal (position 0): the chain starts
        # at LOG_GENESIS with every entry anchored (base 0), as the seals after it say.
        genesis = self.current == LogSeal(0, LOG_GENESIS, 0)
        if genesis:
            self.current = next(seals, None)
        self.base = 0 if genesis else None if self.current is None else self.current.base
        self.hasher = _SealHasher(LOG_GENESIS)
        self.range_start = self.base or 0  # the previous seal's position (or the base)
        self.in_range: int | None = None  # the last position fed to the hasher
        self.last_position = 0
        self.entries = self.checked = self.unanchored = self.unsealed = 0
        self.head: LogSeal | None = None

    def add(self, entry: LogEntry) -> None:
        position = entry[0]
        if position < 1:
            raise _BrokenError(f"log position {position}: positions start at 1")
        if self.entries and position <= self.last_position:
            raise _BrokenError(f"log position {position} after {self.last_position}: out of order")
        if self.base is None or position <= self.base:
            self._read(position)
            self.unanchored += 1
            return
        while self.current is not None and position > self.current.position:
            self._close(position)
        self._read(position)
        if self.current is None:
            self.unsealed += 1
            return
        try:
            self.hasher.feed(entry)
        except (TypeError, AttributeError, struct.error) as exc:
            raise _BrokenError(
                f"log position {position}: the stored entry is malformed ({exc})"
            ) from exc
        self.in_range = position

    def _read(self, position: int) -> None:
        self.entries += 1
        self.last_position = position

    def finish(self) -> None:
        while self.current is not None:
            self._close(None)
        expect = self.expect
        if expect is None or self.expect_met:
            return
        if self.base is None:
            raise _BrokenError(f"expected head {expect.position}: the log has no seals")
        if expect.position <= self.base:
            raise _BrokenError(
                f"expected head {expect.position}: the seals now start after position "
                f"{self.base}, so it cannot be checked (were the seals replaced?)"
            )
        raise _BrokenError(
            f"expected head {expect.position}: no seal at that position (the log is sealed "
            f"up to {self.head.position if self.head else self.base}): seals were removed or "
            "rewritten"
        )

    def _close(self, next_position: int | None) -> None:
        """Check the current seal against the entries fed since the previous one, before
        reading the entry at `next_position` (None: the log ended)."""
        seal = self.current
        assert seal is not None
        if seal.base != self.base:
            raise _BrokenError(
                f"the seal at position {seal.position} starts the chain after position "
                f"{seal.base}, the first seal after {self.base}: the seals were rewritten"
            )
        if seal.position <= self.range_start:
            raise _BrokenError(
                f"the seal at position {seal.position} does not follow position "
                f"{self.range_start}: the seals were rewritten"
            )
        if self.in_range != seal.position:
            where = (
                f"the log ends at position {self.last_position}"
                if next_position is None
                else f"the log goes from position {self.last_position} to {next_position}"
            )
            raise _BrokenError(
                f"the event at position {seal.position} is missing: it is sealed, but {where}"
                " (events were removed)"
            )
        if self.hasher.hexdigest() != seal.digest:
            raise _BrokenError(
                f"the seal at position {seal.position} does not match the log: events after "
                f"position {self.range_start} up to it were changed, removed or inserted"
            )
        if self.expect is not None and self.expect.position == seal.position:
            if self.expect.digest != seal.digest:
                raise _BrokenError(
                    f"expected head {self.expect}, but the log is sealed there as "
                    f"{seal.digest}: the log up to it, and its seals, were rewritten"
                )
            self.expect_met = True
        self.checked += 1
        self.head = seal
        self.range_start = seal.position
        self.hasher = _SealHasher(seal.digest)
        self.in_range = None
        self.current = next(self.seals, None)

    def report(self, broken: str | None) -> LogReport:
        return LogReport(
            entries=self.entries,
            seals=self.checked,
            base=self.base,
            unanchored=self.unanchored,
            head=self.head,
            unsealed=self.unsealed,
            last_position=self.last_position,
            broken=broken,
        )

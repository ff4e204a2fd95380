"""Judging a batch of readings and encoding the accepted ones as reading.recorded events.

Each reading is judged alone. The hot path avoids pydantic and UUID objects per reading:
plainly well-formed items are checked by hand (the rest go through ReadingIn, which gives
the rejection reasons), stream ids come from hashlib (the same uuid5 values), and the
canonical JSON and hash chain seal of each ReadingRecorded are built with one orjson call,
byte for byte what
`events.encode(events.seal(ReadingRecorded(...), None))` gives (a unit test holds it to
that).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import TypeAdapter, ValidationError

from contracts.readings import (
    MAX_FUTURE_SKEW_S,
    MAX_MAGNITUDE,
    ReadingIn,
    dashed,
    derive_reading_id,
    reading_stream_hex,
)
from services.ingest.kpis import KpiFacts

READING_TYPE = "reading.recorded"
_MANY = TypeAdapter(list[ReadingIn])
_ONE = TypeAdapter(ReadingIn)

Row = tuple[UUID | str, int, str, bytes]  # stream id (UUID or 32 hex digits), version, …


@dataclass(slots=True)
class Judged:
    """A batch after judging: rows to insert, rejections, and in-batch duplicates."""

    rows: list[Row] = field(default_factory=list)
    kpi_ids: list[str] = field(default_factory=list)  # each row's kpi_id (canonical text)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


def _error_text(error: Any) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    return f"{loc}: {error['msg']}" if loc else str(error["msg"])


def validate(items: Sequence[Any]) -> list[tuple[int, ReadingIn | str]]:
    """Each item's reading, or the reason it is not one (by index). (The pydantic path;
    `judge` uses it only for items the fast path below does not take.)"""
    try:
        return list(enumerate(_MANY.validate_python(items)))
    except ValidationError:
        pass
    judged: list[tuple[int, ReadingIn | str]] = []
    for index, item in enumerate(items):
        judged.append((index, validate_one(item)))
    return judged


def validate_one(item: Any) -> ReadingIn | str:
    """One item through ReadingIn: the reading, or pydantic's reasons."""
    try:
        return _ONE.validate_python(item)
    except ValidationError as exc:
        return "; ".join(_error_text(e) for e in exc.errors())


# -- the fast path ---------------------------------------------------------------------------
# Readings as integrations usually send them (a JSON object with a canonical UUID string, a
# JSON number within ±MAX_MAGNITUDE, an RFC 3339 timestamp with an offset, short strings)
# are checked by hand: a strict subset of what ReadingIn accepts, giving the same values.
# Anything else (and every invalid reading) goes through ReadingIn itself, so rejections keep
# pydantic's wording. A unit test holds the two paths to the same answers.

_FIELDS = frozenset(("kpi_id", "value", "observed_at", "reading_id", "source"))
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_MAX_INT = int(MAX_MAGNITUDE)  # below 2**53: exact as a float
_fromisoformat = datetime.fromisoformat

# kpi_id, value, observed_at (UTC), reading_id, source
Parsed = tuple[UUID, float, datetime, str | None, str | None]


def _fast(item: Any, uuids: dict[str, UUID | None]) -> Parsed | None:
    """The reading of a plainly well-formed item, or None (then ReadingIn decides)."""
    if type(item) is not dict or not item.keys() <= _FIELDS:
        return None
    text = item.get("kpi_id")
    if type(text) is not str:
        return None
    kpi_id = uuids.get(text, _MISSING)
    if kpi_id is _MISSING:
        kpi_id = UUID(text) if _UUID_TEXT.fullmatch(text) else None
        uuids[text] = kpi_id
    if kpi_id is None:
        return None
    value: Any = item.get("value")
    kind = type(value)  # exact types: bool (an int subclass) and str are not numbers
    if kind is float:
        if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # also False for NaN
            return None
    elif kind is int and -_MAX_INT <= value <= _MAX_INT:
        value = float(value)
    else:
        return None
    observed = item.get("observed_at")
    if type(observed) is not str or not _TIMESTAMP.fullmatch(observed):
        return None
    try:
        when = _fromisoformat(observed).astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: an offset time near year 1 or 9999
        return None
    reading_id = item.get("reading_id")
    if reading_id is not None and (
        type(reading_id) is not str or not 0 < len(reading_id) <= 200 or "\x00" in reading_id
    ):
        return None
    source = item.get("source")
    if source is not None and (type(source) is not str or len(source) > 200 or "\x00" in source):
        return None
    return kpi_id, value, when, reading_id, source


_MISSING: Any = object()


def parse(items: Sequence[Any]) -> list[Parsed | str]:
    """Each item's reading (kpi_id, value, observed_at in UTC, reading_id, source), or the
    reason it is not one; the same answers as ReadingIn gives."""
    uuids: dict[str, UUID | None] = {}
    out: list[Parsed | str] = []
    for item in items:
        parsed = _fast(item, uuids)
        if parsed is None:
            reading = validate_one(item)
            if isinstance(reading, str):
                out.append(reading)
                continue
            parsed = (
                reading.kpi_id,
                reading.value,
                reading.observed_at,
                reading.reading_id,
                reading.source,
            )
        out.append(parsed)
    return out


def encode_reading(
    org_id: str,
    actor: str,
    kpi_id: str,
    value: float,
    observed_at: datetime,
    reading_id: str,
    source: str | None,
    event_id: str,
    recorded_at: datetime,
) -> bytes:
    """The sealed reading.recorded event's canonical JSON (its stream's first event).

    Keys are inserted in sorted order (so no OPT_SORT_KEYS); the hash is computed over the
    encoding without it and spliced in at its sorted place, before "kpi_id" (the keys
    before it are fixed, and quotes inside JSON strings are escaped, so the first
    `,"kpi_id":` is the key)."""
    unsealed = _dumps(
        {
            "actor": actor,
            "causation_id": None,
            "correlation_id": None,
            "event_id": event_id,
            "kpi_id": kpi_id,
            "observed_at": observed_at,
            "occurred_at": observed_at,
            "org_id": org_id,
            "prev_hash": None,
            "reading_id": reading_id,
            "recorded_at": recorded_at,
            "schema_version": 1,
            "source": source,
            "stream_id": event_id,
            "stream_version": 1,
            "type": READING_TYPE,
            "value": value,
        },
        option=orjson.OPT_UTC_Z,
    )
    cut = unsealed.index(b',"kpi_id":')
    digest = _sha256(unsealed).hexdigest().encode()
    return b"".join((unsealed[:cut], b',"hash":"', digest, b'"', unsealed[cut:]))


_dumps = orjson.dumps
_sha256 = hashlib.sha256


def canonical_reading(
    org_id: str,
    actor: str,
    reading: ReadingIn,
    reading_id: str,
    stream_id: UUID,
    recorded_at: datetime,
) -> bytes:
    """encode_reading for a ReadingIn."""
    return encode_reading(
        org_id,
        actor,
        str(reading.kpi_id),
        reading.value,
        reading.observed_at,
        reading_id,
        reading.source,
        str(stream_id),
        recorded_at.astimezone(UTC),
    )


def judge(
    org_id: str,
    items: Sequence[Any],
    lookup: Callable[[UUID], KpiFacts | None],
    now: datetime,
    actor: str = "ingest",
) -> Judged:
    """Rows for the valid, new readings of `items`; rejections by index; in-batch repeats.

    Row stream ids are 32 hex digits (what the store keeps); the event ids inside the
    canonical JSON are the same UUIDs in their dashed form."""
    out = Judged()
    latest = now + timedelta(seconds=MAX_FUTURE_SKEW_S)
    kpis: dict[UUID, tuple[str, str | None]] = {}  # kpi id → (text, None when usable or why not)
    seen: set[str] = set()
    recorded_at = now.astimezone(UTC)
    rows, rejected = out.rows, out.rejected
    for index, reading in enumerate(parse(items)):
        if isinstance(reading, str):
            rejected.append({"index": index, "error": reading})
            continue
        kpi_id, value, observed_at, reading_id, source = reading
        known = kpis.get(kpi_id)
        if known is None:
            facts = lookup(kpi_id)
            if facts is None or facts.org_id != org_id:
                known = (str(kpi_id), f"unknown KPI {kpi_id}")
            elif facts.retired:
                known = (str(kpi_id), f"KPI {kpi_id} is retired")
            else:
                known = (str(kpi_id), None)
            kpis[kpi_id] = known
        kpi_text, problem = known
        if problem is not None:
            rejected.append({"index": index, "error": problem})
            continue
        if observed_at > latest:
            rejected.append(
                {"index": index, "error": "observed_at is more than 5 minutes in the future"}
            )
            continue
        if reading_id is None:
            reading_id = derive_reading_id(kpi_text, observed_at, value, source)
        stream_hex = reading_stream_hex(org_id, kpi_text, reading_id)
        if stream_hex in seen:
            out.duplicates += 1
            continue
        seen.add(stream_hex)
        state = encode_reading(
            org_id, actor, kpi_text, value, observed_at, reading_id, source,
            dashed(stream_hex), recorded_at,
        )  # fmt: skip
        rows.append((stream_hex, 1, READING_TYPE, state))
        out.kpi_ids.append(kpi_text)
    return out

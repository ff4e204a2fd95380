"""Judging a batch of readings and encoding the accepted ones as reading.recorded events.

Each reading is judged alone. The hot path avoids a pydantic model per event: one
TypeAdapter validates the whole list in Rust, and the canonical JSON and hash chain seal
of each ReadingRecorded are built directly with orjson, byte for byte what
`events.encode(events.seal(ReadingRecorded(...), None))` gives (a unit test holds it to
that).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import TypeAdapter, ValidationError

from contracts.readings import (
    MAX_FUTURE_SKEW_S,
    ReadingIn,
    derive_reading_id,
    reading_stream_id,
)
from services.ingest.kpis import KpiFacts

READING_TYPE = "reading.recorded"
_DUMP = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
_MANY = TypeAdapter(list[ReadingIn])
_ONE = TypeAdapter(ReadingIn)

Row = tuple[UUID, int, str, bytes]


@dataclass(slots=True)
class Judged:
    """A batch after judging: rows to insert, rejections, and in-batch duplicates."""

    rows: list[Row] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0


def _error_text(error: Any) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    return f"{loc}: {error['msg']}" if loc else str(error["msg"])


def validate(items: Sequence[Any]) -> list[tuple[int, ReadingIn | str]]:
    """Each item's reading, or the reason it is not one (by index)."""
    try:
        return list(enumerate(_MANY.validate_python(items)))
    except ValidationError:
        pass
    judged: list[tuple[int, ReadingIn | str]] = []
    for index, item in enumerate(items):
        try:
            judged.append((index, _ONE.validate_python(item)))
        except ValidationError as exc:
            judged.append((index, "; ".join(_error_text(e) for e in exc.errors())))
    return judged


def canonical_reading(
    org_id: str,
    actor: str,
    reading: ReadingIn,
    reading_id: str,
    stream_id: UUID,
    recorded_at: datetime,
) -> bytes:
    """The sealed reading.recorded event's canonical JSON (its stream's first event)."""
    data: dict[str, Any] = {
        "actor": actor,
        "causation_id": None,
        "correlation_id": None,
        "event_id": stream_id,
        "kpi_id": reading.kpi_id,
        "observed_at": reading.observed_at,
        "occurred_at": reading.observed_at,
        "org_id": org_id,
        "prev_hash": None,
        "reading_id": reading_id,
        "recorded_at": recorded_at,
        "schema_version": 1,
        "source": reading.source,
        "stream_id": stream_id,
        "stream_version": 1,
        "type": READING_TYPE,
        "value": reading.value,
    }
    data["hash"] = hashlib.sha256(orjson.dumps(data, option=_DUMP)).hexdigest()
    return orjson.dumps(data, option=_DUMP)


def judge(
    org_id: str,
    items: Sequence[Any],
    lookup: Callable[[UUID], KpiFacts | None],
    now: datetime,
    actor: str = "ingest",
) -> Judged:
    """Rows for the valid, new readings of `items`; rejections by index; in-batch repeats."""
    out = Judged()
    latest = now + timedelta(seconds=MAX_FUTURE_SKEW_S)
    kpis: dict[UUID, str | None] = {}  # kpi id → None when usable, else why not
    seen: set[UUID] = set()
    recorded_at = now.astimezone(UTC)
    for index, reading in validate(items):
        if isinstance(reading, str):
            out.rejected.append({"index": index, "error": reading})
            continue
        kpi_id = reading.kpi_id
        if kpi_id not in kpis:
            facts = lookup(kpi_id)
            if facts is None or facts.org_id != org_id:
                kpis[kpi_id] = f"unknown KPI {kpi_id}"
            elif facts.retired:
                kpis[kpi_id] = f"KPI {kpi_id} is retired"
            else:
                kpis[kpi_id] = None
        problem = kpis[kpi_id]
        if problem is not None:
            out.rejected.append({"index": index, "error": problem})
            continue
        if reading.observed_at > latest:
            out.rejected.append(
                {"index": index, "error": "observed_at is more than 5 minutes in the future"}
            )
            continue
        reading_id = reading.reading_id or derive_reading_id(
            kpi_id, reading.observed_at, reading.value, reading.source
        )
        stream_id = reading_stream_id(org_id, kpi_id, reading_id)
        if stream_id in seen:
            out.duplicates += 1
            continue
        seen.add(stream_id)
        state = canonical_reading(org_id, actor, reading, reading_id, stream_id, recorded_at)
        out.rows.append((stream_id, 1, READING_TYPE, state))
    return out

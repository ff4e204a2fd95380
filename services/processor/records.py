"""What the processor consumes and emits, independent of Kafka: readings, goal events,
measurement notices and watermarks, and their wire (de)coding.

Relay records are trusted (they come from the event store, validated on the way in) and
take a fast path; records written straight to okr.kpi-readings.v1 by integrations are
validated like HTTP ingest and, when invalid, become dead letters.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import orjson
from pydantic import ValidationError

import events
from contracts.readings import (
    MAX_FUTURE_SKEW_S,
    MAX_MAGNITUDE,
    KafkaReading,
    derive_reading_id,
    reading_stream_id,
)
from contracts.topics import (
    CONTENT_READING_BATCH,
    CONTENT_WATERMARK,
    HEADER_CONTENT,
    HEADER_POSITION,
)
from services.projectionstore.schema import iso


class ReadingRow(NamedTuple):
    """One reading to store: its event id, and the reading's own fields. Timestamps are in
    the projection store's text form (`schema.iso`: UTC, microseconds, `Z`), which sorts
    chronologically as text. (A named tuple: hundreds of thousands are built per second.)"""

    event_id: str
    org_id: str
    kpi_id: str
    reading_id: str
    value: float
    observed_at: str
    recorded_at: str
    source: str | None
    position: int | None


@dataclass(frozen=True, slots=True)
class GoalItem:
    """One goal event (objective or KPI stream) with its global position and stored body."""

    event: events.Event
    position: int | None
    body: str


class Notice(NamedTuple):
    """A KPI that a key result of `objective_id` measures changed, because of reading
    `event_id` (observed at `occurred_at`, recorded at `recorded_at`). (A named tuple, as
    ReadingRow: a kpi batch builds one per objective it feeds.)"""

    objective_id: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime


class KpiNotice(NamedTuple):
    """KPI `kpi_id` changed on UTC day `day` (YYYY-MM-DD) because of reading `event_id` (the
    batch's latest for that KPI and day); Projector.objectives_measuring turns it into a
    Notice for each objective it feeds whose period holds the day."""

    kpi_id: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    day: str


N = TypeVar("N", Notice, KpiNotice)


def keep_latest(into: dict[str, N], key: str, notice: N) -> None:
    """Keep in `into[key]` the later of the held notice and `notice` (by the causing
    reading's occurred_at, then event id): coalesced notices keep the latest cause."""
    seen = into.get(key)
    if seen is None or (notice.occurred_at, notice.event_id) > (seen.occurred_at, seen.event_id):
        into[key] = notice


@dataclass(frozen=True, slots=True)
class Watermark:
    """Everything at or below `position` was applied, for this (stage, topic, partition,
    source partition) row of services.projectionstore.positions."""

    stage: str
    topic: str
    part: int
    source_part: int
    position: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be applied, with the reason (okr.readings-dlq.v1)."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "reason": self.reason,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "key": _text(self.key),
                "value": _text(self.value),
            }
        )


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def header_map(headers: Any) -> dict[str, str]:
    """Record headers (list of (key, bytes) pairs or a mapping) as str → str."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    found: dict[str, str] = {}
    for k, v in items:
        key = k.decode() if isinstance(k, bytes) else str(k)
        found[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return found


def parse_utc(text: str) -> datetime:
    """An RFC 3339 timestamp (the events' canonical JSON form) as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"naive timestamp {text!r}")
    return value.astimezone(UTC)


def stored_time(text: str) -> str:
    """An RFC 3339 timestamp as the projection store's text (`schema.iso`). The canonical
    JSON of events already has UTC `Z` strings (`…:SSZ` or `…:SS.ffffffZ`): those are
    completed without parsing; anything else goes through a full parse."""
    if len(text) == 20 and text[19] == "Z" and text[10] == "T":
        return text[:19] + ".000000Z"
    if len(text) == 27 and text[26] == "Z" and text[19] == "." and text[10] == "T":
        return text
    return iso(parse_utc(text))


def watermark_of(headers: Mapping[str, str], value: bytes | None) -> int | None:
    """The position of a watermark record, or None when the record is not one."""
    if headers.get(HEADER_CONTENT) != CONTENT_WATERMARK:
        return None
    raw = headers.get("okr-watermark")
    if raw is not None:
        return int(raw)
    data = orjson.loads(value or b"{}")
    return int(data["watermark"])


def reading_from_event_dict(data: Mapping[str, Any], position: int | None) -> ReadingRow:
    """A stored/relayed reading.recorded event (canonical JSON dict) as a row (fast path)."""
    if data.get("type") != "reading.recorded":
        raise ValueError(f"not a reading.recorded event: {data.get('type')!r}")
    # The header that marks a relay batch can be set by any producer of the topic: the
    # stateless rules of ingest hold here too, so a forged batch cannot store what ingest
    # refuses (a NUL, which PostgreSQL cannot store, would fail every take of the partition).
    raw = data["value"]
    if type(raw) is not float and type(raw) is not int:
        raise ValueError("reading value must be a JSON number")
    value = float(raw)
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # False for NaN too
        raise ValueError(f"reading value must be finite and within ±{MAX_MAGNITUDE:g}")
    ids = (str(data["event_id"]), str(data["org_id"]), str(data["kpi_id"]).lower())
    reading_id = str(data["reading_id"])
    if any("\x00" in text for text in (*ids, reading_id)):
        raise ValueError("ids must not contain NUL characters")
    return ReadingRow(
        ids[0],
        ids[1],
        ids[2],
        reading_id,
        value,
        stored_time(str(data["observed_at"])),
        stored_time(str(data["recorded_at"])),
        data.get("source"),
        position,
    )


def relay_batch(
    value: bytes, position: int | None
) -> tuple[list[ReadingRow], list[tuple[int, str, bytes]]]:
    """The readings of one relay record (a JSON array of reading.recorded events), and the
    entries that are not one, each as (index, reason, its JSON): a record carries the
    readings of many KPIs, and one bad entry must not take the others with it. Raises
    ValueError when the record is not a JSON array."""
    items = orjson.loads(value)
    if not isinstance(items, list):
        raise ValueError("a reading batch must be a JSON array")
    rows: list[ReadingRow] = []
    bad: list[tuple[int, str, bytes]] = []
    for i, d in enumerate(items):
        try:
            rows.append(reading_from_event_dict(d, position))
        except Exception as exc:  # any defect of the entry is its reason
            bad.append((i, f"{type(exc).__name__}: {exc}", orjson.dumps(d)))
    return rows, bad


KpiLookup = Callable[[str], tuple[str, str] | None]
"""kpi_id → (org_id, state) from the projection store, or None when unknown."""


class UnknownKpiError(ValueError):
    """A direct reading of a KPI the projections do not know (yet): its definition may
    still be on its way through the event store, the relay and Kafka."""

    def __init__(self, kpi_id: str, org_id: str) -> None:
        super().__init__(f"unknown KPI {kpi_id} for organisation {org_id!r}")
        self.kpi_id = kpi_id


def direct_reading(value: bytes, now: datetime, kpi_lookup: KpiLookup) -> ReadingRow:
    """Validate a reading written straight to the topic by an integration (like HTTP
    ingest) as received at `now`; raise ValueError with the reason when it must go to the
    dead-letter topic, UnknownKpiError when its KPI is not known yet (services/processor/
    held.py holds it)."""
    try:
        reading = KafkaReading.model_validate_json(value)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid reading: {errors}") from None
    kpi_id = str(reading.kpi_id)
    known = kpi_lookup(kpi_id)
    if known is None:
        raise UnknownKpiError(kpi_id, reading.org_id)
    if known[0] != reading.org_id:
        raise ValueError(f"unknown KPI {kpi_id} for organisation {reading.org_id!r}")
    if known[1] == "retired":
        raise ValueError(f"KPI {kpi_id} is retired")
    if reading.observed_at > now + timedelta(seconds=MAX_FUTURE_SKEW_S):
        raise ValueError("observed_at is more than 5 minutes in the future")
    reading_id = reading.reading_id or derive_reading_id(
        reading.kpi_id, reading.observed_at, reading.value, reading.source
    )
    return ReadingRow(
        event_id=str(reading_stream_id(reading.org_id, reading.kpi_id, reading_id)),
        org_id=reading.org_id,
        kpi_id=kpi_id,
        reading_id=reading_id,
        value=reading.value,
        observed_at=iso(reading.observed_at),
        recorded_at=iso(now),
        source=reading.source,
        position=None,
    )


def is_reading_batch(headers: Mapping[str, str]) -> bool:
    return headers.get(HEADER_CONTENT) == CONTENT_READING_BATCH


def position_header(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(HEADER_POSITION)
    return int(raw) if raw else None


def goal_item(value: bytes, position: int | None) -> GoalItem:
    """A goal event record's value as a GoalItem (its body re-encoded canonically)."""
    event = events.decode(value)
    return GoalItem(event, position, events.encode(event).decode())


# -- the internal measurement topic ----------------------------------------------------------


def encode_measurements(notices: Sequence[Notice]) -> bytes:
    """A bundle of KR measurement notices (one partition's share of a KPI batch): each
    objective with the index of its cause (the reading), the causes listed once; JSON,
    deflated (zlib, fastest level: about half the size, so a consumer's buffer of bundles
    holds half the memory)."""
    causes: dict[tuple[str, datetime, datetime], int] = {}
    objectives = []
    for n in notices:
        key = (n.event_id, n.occurred_at, n.recorded_at)
        objectives.append((n.objective_id, causes.setdefault(key, len(causes))))
    body = orjson.dumps(
        {
            "causes": [(e, o.isoformat(), r.isoformat()) for e, o, r in causes],
            "objectives": objectives,
        }
    )
    return zlib.compress(body, 1)


def encode_measure_watermark(position: int, source_part: int) -> bytes:
    return orjson.dumps({"watermark": position, "source_part": source_part})


def _measurement_data(value: bytes) -> Any:
    # A deflated bundle (zlib's header byte is "x"), or plain JSON: a watermark, or a
    # bundle written before bundles were deflated.
    return orjson.loads(zlib.decompress(value) if value[:1] == b"x" else value)


Cause = tuple[datetime, str, datetime]
"""A notice's cause as (occurred_at, event_id, recorded_at): its first two compare as
keep_latest compares notices."""


def fold_measurement(value: bytes, latest: dict[str, Cause]) -> tuple[int, int] | None:
    """Fold a bundle into `latest` (objective id → its latest cause, as keep_latest keeps
    notices) without building a notice per entry; a forwarded watermark is returned as
    (position, source partition) instead. A take of bundles at 100k objectives holds
    millions of entries."""
    data = _measurement_data(value)
    if "watermark" in data:
        return int(data["watermark"]), int(data["source_part"])
    causes = [(parse_utc(o), str(e), parse_utc(r)) for e, o, r in data["causes"]]
    for oid, i in data["objectives"]:
        cause = causes[i]
        held = latest.get(oid)
        if held is None or cause[:2] > held[:2]:  # as keep_latest: a tie keeps the first
            latest[oid] = cause
    return None


def notices_of(latest: dict[str, Cause]) -> dict[str, Notice]:
    """The notices of fold_measurement's `latest`, by objective id."""
    return {oid: Notice(oid, e, o, r) for oid, (o, e, r) in latest.items()}


def uuid_text(value: UUID | str) -> str:
    return str(value).lower()

"""The wire format of the relay: notification-log entries → Kafka records. Pure functions.

- goal events → okr.goal-events.v1, one record each, keyed by stream id, the stored
  canonical JSON unchanged, headers okr-event-id / okr-event-type / okr-position;
- readings → okr.kpi-readings.v1, a JSON array of reading events: the readings of one
  relay batch whose KPIs share a partition go together (in position order), at most
  `readings_per_record` per record, sent to that partition (the one records keyed by
  kpi_id go to: services.kafka.partitioning) without a key; headers
  okr-content=reading-batch, okr-position (the record's last position), okr-event-id
  (comma-separated). Packed per partition rather than per KPI, a record carries
  `readings_per_record` readings however many KPIs share the batch (with 200 KPIs, a
  5,000-entry batch made 25-reading records per KPI), and the processor's cost per record
  is spread over that many readings;
- watermarks: key None, {"watermark": P} to every partition of both topics.

Records are emitted in order of their last position, so positions in headers never go
backwards within a partition, and each KPI's and each goal stream's readings and events
keep their order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

import events
from contracts.topics import (
    CONTENT_READING_BATCH,
    CONTENT_WATERMARK,
    GOAL_EVENTS,
    HEADER_CONTENT,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_POSITION,
    HEADER_WATERMARK,
    KPI_READINGS,
)
from services.eventstore import StoredNotification
from services.kafka.partitioning import pack

GOAL_TYPES = frozenset(cls.type_name() for cls in events.GOAL_EVENT_CLASSES)
READING_TYPE = events.ReadingRecorded.type_name()
WATERMARK_TOPICS = (GOAL_EVENTS.name, KPI_READINGS.name)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One Kafka record to send, and the highest store position it carries. `partition`:
    where to send it, or None for where its key goes."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    position: int
    partition: int | None = None


@functools.cache
def _marker(name: str) -> bytes:
    return f'"{name}":"'.encode()


def _text_field(state: bytes, name: str) -> str:
    # Canonical JSON is compact with escaped quotes inside strings, so `"name":"` can only be
    # the key itself; anything unexpected falls back to a full parse.
    marker = _marker(name)
    start = state.find(marker)
    if start >= 0:
        start += len(marker)
        end = state.find(b'"', start)
        if end > start:
            return state[start:end].decode()
    return str(orjson.loads(state)[name])


def goal_record(n: StoredNotification) -> OutRecord:
    return OutRecord(
        topic=GOAL_EVENTS.name,
        key=str(n.stream_id).encode(),
        value=n.state,
        headers=[
            (HEADER_EVENT_ID, _text_field(n.state, "event_id").encode()),
            (HEADER_EVENT_TYPE, n.type.encode()),
            (HEADER_POSITION, str(n.position).encode()),
        ],
        position=n.position,
    )


def reading_record(partition: int, chunk: Sequence[StoredNotification]) -> OutRecord:
    last = chunk[-1].position
    return OutRecord(
        topic=KPI_READINGS.name,
        key=None,
        partition=partition,
        value=b"[" + b",".join(n.state for n in chunk) + b"]",
        headers=[
            (HEADER_CONTENT, CONTENT_READING_BATCH.encode()),
            (HEADER_POSITION, str(last).encode()),
            (HEADER_EVENT_ID, ",".join(_text_field(n.state, "event_id") for n in chunk).encode()),
        ],
        position=last,
    )


def to_records(
    batch: Iterable[StoredNotification], readings_per_record: int, partitions: int
) -> tuple[list[OutRecord], list[StoredNotification]]:
    """(records in position order, entries of other types that the relay does not carry);
    okr.kpi-readings.v1 has `partitions` partitions."""
    records: list[OutRecord] = []
    skipped: list[StoredNotification] = []
    readings: list[tuple[str, StoredNotification]] = []
    for n in batch:
        if n.type == READING_TYPE:
            readings.append((_text_field(n.state, "kpi_id"), n))
        elif n.type in GOAL_TYPES:
            records.append(goal_record(n))
        else:
            skipped.append(n)
    for part, chunk in pack(readings, readings_per_record, partitions):
        records.append(reading_record(part, chunk))
    records.sort(key=lambda r: r.position)
    return records, skipped


def watermark_value(position: int) -> bytes:
    return b'{"watermark": %d}' % position


def watermark_headers(position: int) -> Headers:
    return [
        (HEADER_CONTENT, CONTENT_WATERMARK.encode()),
        (HEADER_WATERMARK, str(position).encode()),
    ]

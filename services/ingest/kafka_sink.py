"""Direct-to-Kafka readings (OKR_INGEST_MODE=kafka, issue 7): judged readings go straight to
okr.kpi-readings.v1 instead of the event store, and the 202 waits for the broker's ack.

The records are the relay's reading batches exactly (a JSON array of canonical
reading.recorded events whose KPIs share a partition, sent to that partition without a key,
headers okr-content=reading-batch and okr-event-id), except that there is no okr-position
header: these readings have no position in the event store, so `min_position`
read-your-writes does not cover them. A test holds the records equal to what the relay
publishes for the same events.

Delivery: acks=all. kafka-python's idempotent producer is used when the broker supports it;
the embedded Tansu broker answers its produce requests with UnknownError (measured), so the
first failure of that kind switches, once and for good, to a plain producer with one request
in flight per connection (a retried request can never overtake the next, so per-partition
order holds) and the batch is sent again. Kafka delivery is at least once either way: a
retried request or a client's retry may publish a reading twice, with the same event id,
and the processor applies each event id once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, UnknownError

from contracts.topics import (
    CONTENT_READING_BATCH,
    HEADER_CONTENT,
    HEADER_EVENT_ID,
    KPI_READINGS,
)
from services.kafka.partitioning import pack
from services.settings import Settings

log = logging.getLogger("okrstream.ingest.kafka")

SEND_TIMEOUT_S = 30.0

Record = tuple[int, bytes, list[tuple[str, bytes]]]  # partition, value, headers


def _event_id(state: bytes) -> str:
    # canonical JSON: `"event_id":"` can only be the key (quotes inside strings are escaped)
    start = state.index(b'"event_id":"') + 12
    return state[start : state.index(b'"', start)].decode()


def reading_records(
    kpi_ids: Sequence[str], states: Sequence[bytes], readings_per_record: int, partitions: int
) -> list[Record]:
    """The relay's grouping: the readings whose KPIs share a partition (of `partitions`)
    together, in order, at most `readings_per_record` per record; partitions in order of
    first appearance."""
    records: list[Record] = []
    keyed = zip(kpi_ids, states, strict=True)
    for part, chunk in pack(keyed, readings_per_record, partitions):
        headers = [
            (HEADER_CONTENT, CONTENT_READING_BATCH.encode()),
            (HEADER_EVENT_ID, ",".join(_event_id(s) for s in chunk).encode()),
        ]
        records.append((part, b"[" + b",".join(chunk) + b"]", headers))
    return records


class KafkaUnavailableError(Exception):
    """The broker did not acknowledge the readings (nothing may be assumed stored)."""


class KafkaReadingsSink:
    """Produces reading batches with acks=all and waits for the acknowledgements."""

    def __init__(self, settings: Settings, *, idempotent: bool = True) -> None:
        self.settings = settings
        self.partitions = settings.kafka_partitions  # of okr.kpi-readings.v1
        self._checked: Any = None  # the producer whose topic partitions were checked
        self.idempotent = idempotent
        self.confirmed = False  # the current producer kind has had a batch acknowledged
        self._producer: Any = None
        self._lock = threading.Lock()

    def _make(self) -> KafkaProducer:
        options: dict[str, Any] = {
            "bootstrap_servers": self.settings.bootstrap_servers,
            "client_id": "okrstream-ingest",
            "acks": "all",
            "linger_ms": 2,
            "batch_size": 1024 * 1024,
            "max_request_size": 32 * 1024 * 1024,
            "request_timeout_ms": 10_000,
            "max_block_ms": 10_000,
        }
        if self.idempotent:
            options |= {"enable_idempotence": True}
        else:
            options |= {
                "enable_idempotence": False,
                "max_in_flight_requests_per_connection": 1,
                "retries": 2**31 - 1,
            }
        return KafkaProducer(**options)

    def producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self._make()
            return self._producer

    def _fall_back(self, broken: Any, why: Exception) -> None:
        with self._lock:
            if self._producer is broken and self.idempotent and not self.confirmed:
                log.warning(
                    "the broker at %s refuses idempotent produce (%s); using acks=all with "
                    "one request in flight instead",
                    self.settings.bootstrap_servers,
                    why,
                )
                self.idempotent = False
                self._producer = None
        try:
            broken.close(timeout=1)
        except Exception:  # closing a broken producer: nothing more to do
            log.debug("producer close failed", exc_info=True)

    def send(self, records: Sequence[Record]) -> None:
        """Publish `records` to okr.kpi-readings.v1 and return once all are acknowledged."""
        if not records:
            return
        for attempt in range(2):
            producer = self.producer()
            try:
                self._send_and_wait(producer, records)
                self.confirmed = True
                return
            except UnknownError as exc:
                if attempt == 0 and self.idempotent and not self.confirmed:
                    self._fall_back(producer, exc)
                    continue
                raise KafkaUnavailableError(str(exc)) from exc
            except KafkaError as exc:
                raise KafkaUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    def _send_and_wait(self, producer: Any, records: Sequence[Record]) -> None:
        topic = KPI_READINGS.name
        if producer is not self._checked:
            # The records go to partitions computed from OKR_KAFKA_PARTITIONS: with another
            # count a KPI's readings would land beside, not with, the relay's and the
            # integrations' (and a partition past the end fails deep in kafka-python).
            found = producer.partitions_for(topic)
            if found is None or len(found) != self.partitions:
                raise KafkaUnavailableError(
                    f"{topic} has {len(found or ())} partitions, OKR_KAFKA_PARTITIONS says"
                    f" {self.partitions}: recreate the topic or fix the setting"
                )
            self._checked = producer
        futures = [
            producer.send(topic, key=None, value=v, headers=h, partition=p) for p, v, h in records
        ]
        deadline = time.monotonic() + SEND_TIMEOUT_S
        for future in futures:
            future.get(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:  # closing at shutdown: nothing more to do
                log.debug("producer close failed", exc_info=True)

"""Composition root of the relay: follow the notification log, publish to Kafka, in order.

At-least-once: the published position is recorded only after Kafka acknowledged the
records (acks=all, one request in flight, so per-key order holds across retries); a crash
re-publishes at most one batch, and consumers dedupe by event id. When the broker comes
back without our records (the embedded broker restarted empty) everything is published
again from position 0. Transient errors are logged and retried with backoff; SIGTERM
flushes and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.record.util import crc32c_c

from services.eventstore import EventStore, StoreUnavailableError
from services.kafka.admin import PartitionMismatchError, ensure_topics
from services.projectionstore.db import DatabaseUnavailableError, lasting
from services.relay.progress import Progress, ProgressStore
from services.relay.records import (
    WATERMARK_TOPICS,
    OutRecord,
    to_records,
    watermark_headers,
    watermark_value,
)
from services.settings import Settings, load_settings

log = logging.getLogger("okrstream.relay")

WATERMARK_EVERY_S = 1.0
RESET_CHECK_EVERY_S = 5.0
FLUSH_TIMEOUT_S = 30.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


class BrokerResetError(Exception):
    """The broker lost records we published: start over from position 0."""


# Record batches carry a CRC-32C that kafka-python computes in pure Python unless the C
# `crc32c` module is importable. Measured on the 2-core machine, relay CPU per 1,000 readings:
# with the C CRC, uncompressed 13.5 ms, lz4 13.8 ms, gzip level 1 18.3 ms, gzip (level 9)
# 26.4 ms; with the pure-Python CRC, uncompressed 82.6 ms, gzip 27.7 ms (gzip shrinks what
# the slow CRC must walk). lz4 would also need the lz4 module in every consumer. So: no
# compression when the C CRC is there, gzip otherwise.
RELAY_COMPRESSION: str | None = None if crc32c_c is not None else "gzip"


def make_producer(settings: Settings, compression: str | None = RELAY_COMPRESSION) -> KafkaProducer:
    """acks=all with one request in flight per connection: a retried request can never
    overtake the next one, so per-key order holds. (kafka-python's idempotent producer gets
    UnknownError from the embedded Tansu broker on every produce, measured.)"""
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="okrstream-relay",
        acks="all",
        enable_idempotence=False,
        max_in_flight_requests_per_connection=1,
        linger_ms=5,
        compression_type=compression,
        batch_size=1024 * 1024,
        max_request_size=32 * 1024 * 1024,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
        retries=2**31 - 1,
    )


def end_offsets(settings: Settings, partitions: dict[str, int]) -> dict[str, int]:
    """The broker's end offset of every partition of the relay's topics."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="okrstream-relay-check",
        request_timeout_ms=10_000,
    )
    try:
        tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
        found: dict[TopicPartition, int] = consumer.end_offsets(tps)
        return {f"{tp.topic}:{tp.partition}": int(off) for tp, off in found.items()}
    finally:
        consumer.close()


class Relay:
    """The publish loop. `step()` does one unit of work; `run()` loops until stopped."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        progress: ProgressStore,
        *,
        producer_factory: Callable[[Settings], Any] = make_producer,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.progress_store = progress
        self.producer_factory = producer_factory
        self.progress: Progress = progress.load()
        self.producer: Any = None
        self.stopping = stopping or threading.Event()
        self.last_watermark = 0.0
        self.last_reset_check = 0.0
        self.published = 0
        # The log slice after a position, read while the batch before it was in flight;
        # used only if the progress reached exactly that position.
        self.read_ahead: tuple[int, list[Any]] | None = None
        partitions = settings.kafka_partitions
        self.partitions = dict.fromkeys(WATERMARK_TOPICS, partitions)

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        ensure_topics(
            self.settings.bootstrap_servers,
            self.settings.kafka_partitions,
            self.settings.kafka_replication_factor,
        )
        self.producer = self.producer_factory(self.settings)
        self.check_broker()
        log.info(
            "connected to Kafka at %s; publishing after position %d",
            self.settings.bootstrap_servers,
            self.progress.position,
        )

    def disconnect(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(timeout=2)
            except Exception:  # closing a broken producer: nothing more to do
                log.debug("producer close failed", exc_info=True)

    def check_broker(self) -> None:
        """Start over from 0 when the broker's end offsets fell below what we published."""
        self.last_reset_check = time.monotonic()
        if not self.progress.offsets:
            return
        ends = end_offsets(self.settings, self.partitions)
        lost = [tp for tp, off in self.progress.offsets.items() if ends.get(tp, 0) < off]
        if lost:
            self._start_over(f"the broker lost records (end offsets fell on {', '.join(lost)})")

    def _start_over(self, why: str) -> None:
        log.warning("%s: publishing everything again from position 0", why)
        self.progress = Progress()
        self.progress_store.save(self.progress)

    # -- publishing ----------------------------------------------------------------------

    def _send_all(self, records: list[OutRecord], after: int) -> dict[str, int]:
        """Send `records` and wait for every ack; meanwhile read the log slice after
        position `after` (the next batch, while this one is in flight)."""
        futures = [
            self.producer.send(
                r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition
            )
            for r in records
        ]
        self.read_ahead = (after, self.store.notifications(after, self.settings.relay_batch_size))
        self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        acked: dict[str, int] = {}
        for future in futures:
            if not future.is_done:
                raise KafkaError("a record was not acknowledged within the flush timeout")
            if future.failed():
                raise future.exception
            meta = future.value
            tp = f"{meta.topic}:{meta.partition}"
            acked[tp] = max(acked.get(tp, 0), meta.offset + 1)
        return acked

    def publish(self, batch: list[Any]) -> int:
        """Publish one batch of notifications; record progress; send watermarks."""
        records, skipped = to_records(
            batch, self.settings.relay_readings_per_record, self.settings.kafka_partitions
        )
        if skipped:
            log.debug("skipping %d entries of types the relay does not carry", len(skipped))
        acked = self._send_all(records, batch[-1].position)
        lower = [tp for tp, off in acked.items() if off < self.progress.offsets.get(tp, 0)]
        if lower:
            raise BrokerResetError(f"offsets went backwards on {', '.join(lower)}")
        last = batch[-1].position
        self.progress = Progress(last, {**self.progress.offsets, **acked})
        self.progress_store.save(self.progress)
        self.published += len(batch)
        # No flush here: the watermarks go out with the next batch (or the idle flush), and
        # always after the records they cover, which are already acknowledged.
        self.send_watermarks(last, flush=False)
        return len(batch)

    def send_watermarks(self, position: int, *, flush: bool = True) -> None:
        """Tell every partition that everything ≤ `position` is published."""
        value, headers = watermark_value(position), watermark_headers(position)
        for topic, count in self.partitions.items():
            for partition in range(count):
                self.producer.send(
                    topic, key=None, value=value, headers=headers, partition=partition
                )
        if flush:
            self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        self.last_watermark = time.monotonic()

    def step(self) -> int:
        """One unit of work: publish the next batch, or keep idle duties. Returns entries
        published."""
        if self.producer is None:
            self.connect()
        ahead, self.read_ahead = self.read_ahead, None
        if ahead is not None and ahead[0] == self.progress.position and ahead[1]:
            batch = ahead[1]  # read while the previous batch was in flight
        else:
            batch = self.store.notifications(self.progress.position, self.settings.relay_batch_size)
        if batch:
            return self.publish(batch)
        now = time.monotonic()
        if now - self.last_watermark >= WATERMARK_EVERY_S:
            # The producer reconnects on its own: a broker that restarted empty must be
            # noticed before a watermark claims positions it no longer holds.
            self.check_broker()
            self.send_watermarks(max(self.progress.position, 0))
        elif now - self.last_reset_check >= RESET_CHECK_EVERY_S:
            self.check_broker()
        return 0

    def run(self) -> None:
        """Publish until `stopping` is set; never exit on a transient error."""
        backoff = BACKOFF_MIN_S
        while not self.stopping.is_set():
            try:
                if self.step() == 0:
                    self.stopping.wait(self.settings.relay_poll_interval_s)
                backoff = BACKOFF_MIN_S
            except BrokerResetError as exc:
                self._start_over(str(exc))
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning(
                    "Kafka at %s unavailable (%s: %s); retrying in %.1f s",
                    self.settings.bootstrap_servers,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                self.disconnect()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except (StoreUnavailableError, DatabaseUnavailableError) as exc:
                log.warning("store unavailable (%s); retrying in %.1f s", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.disconnect()


def open_stores(
    settings: Settings, stopping: threading.Event
) -> tuple[EventStore, ProgressStore] | None:
    """The event store and the relay's progress, opened as soon as they can be: an
    unreachable database is logged and tried again with backoff (exiting would have the
    supervisor restart the relay over and over, and give up on the whole stack during an
    outage of a minute); a misconfiguration (db.lasting: no such database, refused
    credentials) exits with its message. None when `stopping` is set first."""
    backoff = BACKOFF_MIN_S
    while not stopping.is_set():
        try:
            store = EventStore.from_settings(settings)
        except StoreUnavailableError as exc:
            if lasting(str(exc)):
                raise SystemExit(f"relay: {exc}") from None
            log.warning("event store unavailable (%s); retrying in %.1f s", exc, backoff)
        else:
            try:
                return store, ProgressStore.from_settings(settings)
            except DatabaseUnavailableError as exc:
                store.close()
                if lasting(str(exc)):
                    raise SystemExit(f"relay: {exc}") from None
                log.warning("relay progress unavailable (%s); retrying in %.1f s", exc, backoff)
        stopping.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
    return None


def main() -> None:
    """Run the relay until SIGTERM/SIGINT (exit 0)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stdout,
    )
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch and stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    opened = open_stores(settings, stopping)
    if opened is None:
        sys.exit(0)
    store, progress = opened
    relay = Relay(settings, store, progress, stopping=stopping)
    log.info("relay starting (batch %d)", settings.relay_batch_size)
    try:
        relay.run()
    except PartitionMismatchError as exc:
        raise SystemExit(f"relay: {exc}") from None
    finally:
        progress.close()
        store.close()
    log.info("relay stopped at position %d", relay.progress.position)
    sys.exit(0)


if __name__ == "__main__":
    main()

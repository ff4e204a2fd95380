"""The faust-streaming wiring of the processor: two agents, two timers, nothing else.

- kpi agent on okr.kpi-readings.v1 (keyed by kpi): relay batches, direct readings (validated,
  invalid → okr.readings-dlq.v1) and watermarks → Projector.apply_readings; then the KR
  measurement notices (one per objective measuring a KPI of the batch on a day of its
  period) to okr.kr-measurements.v1, partitioned by objective as its goal events are, in
  bundles of up to BUNDLE notices per record; and the watermarks forwarded to every
  partition of that topic.
- objective agent on okr.goal-events.v1 + okr.kr-measurements.v1 (partitioned by objective) →
  Projector.apply_goal_take: the goal events are applied and their objectives re-evaluated
  at once; the measurement notices (and the watermarks behind them) are deferred, in the
  same transaction, to the projection store (pending_notices: the latest cause per
  objective).
- passes: a timer re-evaluates the deferred notices (Projector.evaluate_pending, in slices of
  OBJECTIVES_PER_TX; other batches interleave between slices) once the kpi agent is idle,
  or PASS_HOLD_S after the first notice deferred since the last pass began. A burst of
  readings sends notices for the same objectives after every kpi batch: each objective is
  re-evaluated once per pass, not once per batch.
- timers: time-driven detections (Projector.tick_step, a chunk per transaction) and the
  notices of readings of a day that has now come (Projector.defer_due_later), the
  detections outbox → okr.detections.v1, and handing freed memory back (runtime.py).

All database work runs on one worker thread, so the event loop keeps fetching while a batch
is written; at-least-once delivery is made harmless by the projector's idempotency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import faust

from contracts.topics import (
    DETECTIONS,
    GOAL_EVENTS,
    KPI_READINGS,
    KR_MEASUREMENTS,
    READINGS_DLQ,
)
from services.kafka.partitioning import partition_of
from services.processor import held
from services.processor.held import HeldReading
from services.processor.projector import TICK_START, Projector, utcnow
from services.processor.records import (
    Cause,
    DeadLetter,
    GoalItem,
    Notice,
    ReadingRow,
    UnknownKpiError,
    Watermark,
    direct_reading,
    encode_measure_watermark,
    encode_measurements,
    fold_measurement,
    goal_item,
    header_map,
    is_reading_batch,
    keep_latest,
    notices_of,
    position_header,
    relay_batch,
    watermark_of,
)
from services.processor.runtime import release_free_memory
from services.processor.transport import broker_url
from services.projectionstore.db import DatabaseUnavailableError
from services.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Records per kpi batch, and the readings buffer (relay records: up to 100 readings, ~33 kB;
# the relay packs a partition's readings, so its records are full under load).
TAKE = 1_000
WITHIN_S = 0.05
PARSE_RECORDS = 100  # records parsed at a time
APPLY_ROWS = 20_000  # readings per projection transaction
OBJECTIVES_PER_TX = 1_000  # objectives re-evaluated per projection transaction
BUNDLE = 1_000  # measurement notices per okr.kr-measurements.v1 record (about 24 kB)
# The objective agent's records are goal events or bundles of up to BUNDLE notices: its
# read-ahead stays bounded (a take and twice as much again, ~70 MB at worst) while the
# notices of one take, coalesced per objective as they are decoded, cost one deferral
# (one row of pending_notices) each.
GOAL_TAKE = 1_000
# Deferred notices wait for a pass while the kpi agent works, at most PASS_HOLD_S after the
# first of them: during a burst of readings a pass then counts everything applied
# meanwhile. Scores and the applied position lag a burst by up to a hold, half the 10 s a
# min_position read waits. With the kpi agent idle, a pass starts within a timer tick.
PASS_HOLD_S = 5.0
PASS_CHECK_S = WITHIN_S  # how often the pass timer looks
KPI_IDLE_S = 2 * WITHIN_S  # no kpi batch running or started for this long: its buffer is empty
TICK_S = 30.0
OUTBOX_S = 1.0
RELEASE_S = 1.0  # how often held direct readings are looked at (services/processor/held.py)
TRIM_S = 5.0  # how often freed C-heap pages go back to the system (runtime.py)


@dataclass
class Activity:
    """Whether an agent is working: batches in flight and when the last one ended."""

    running: int = 0
    ended_at: float = 0.0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self.ended_at = time.monotonic()

    def idle(self, quiet_s: float) -> bool:
        """No batch running, and none ended within the last `quiet_s` seconds."""
        return self.running == 0 and time.monotonic() - self.ended_at >= quiet_s


@dataclass
class Passes:
    """When the deferred notices are re-evaluated: once the kpi agent is idle, or PASS_HOLD_S
    after the first notice deferred since the last pass began. A worker starts due: notices
    an earlier run deferred may be waiting."""

    deferred_at: float | None = field(default_factory=time.monotonic)
    retry_at: float = 0.0  # after a failed pass: not before then

    def deferred(self) -> None:
        if self.deferred_at is None:
            self.deferred_at = time.monotonic()

    def due(self, kpi: Activity) -> bool:
        now = time.monotonic()
        if self.deferred_at is None or now < self.retry_at:
            return False
        return kpi.idle(KPI_IDLE_S) or now - self.deferred_at >= PASS_HOLD_S

    def start(self) -> None:
        self.deferred_at = None

    def failed(self) -> None:
        """A pass failed (its notices stay deferred): try again after a hold, not at once."""
        self.deferred()
        self.retry_at = time.monotonic() + PASS_HOLD_S


@dataclass
class KpiBatch:
    rows: list[ReadingRow] = field(default_factory=list)
    marks: list[Watermark] = field(default_factory=list)
    forward: list[tuple[int, int]] = field(default_factory=list)  # (position, source part)
    dead: list[DeadLetter] = field(default_factory=list)
    held: list[HeldReading] = field(default_factory=list)  # of KPIs not known yet


def parse_kpi_records(projector: Projector, records: Sequence[Any]) -> KpiBatch:
    """Split okr.kpi-readings.v1 records (faust events) into rows, watermarks and dead
    letters. Direct readings are validated against the projection store's KPIs."""
    batch = KpiBatch()
    now = utcnow()
    known: dict[str, tuple[str, str] | None] = {}

    def lookup(kpi_id: str) -> tuple[str, str] | None:
        if kpi_id not in known:
            known[kpi_id] = projector.kpi_org_state(kpi_id)
        return known[kpi_id]

    for event in records:
        msg = event.message
        headers = header_map(msg.headers)
        value: bytes | None = msg.value
        try:
            position = watermark_of(headers, value)
            if position is not None:
                mark = Watermark("kpi", KPI_READINGS.name, msg.partition, -1, position)
                batch.marks.append(mark)
                batch.forward.append((position, msg.partition))
            elif is_reading_batch(headers):
                rows, bad = relay_batch(value or b"", position_header(headers))
                batch.rows += rows
                for i, reason, entry in bad:
                    why = f"entry {i} of a reading batch: {reason}"[:1000]
                    batch.dead.append(
                        DeadLetter(why, msg.topic, msg.partition, msg.offset, msg.key, entry)
                    )
            else:
                try:
                    batch.rows.append(direct_reading(value or b"", now, lookup))
                except UnknownKpiError as exc:  # its definition may be on its way: held
                    text = (value or b"").decode()
                    batch.held.append(
                        HeldReading(exc.kpi_id, msg.topic, msg.partition, msg.offset, msg.key,
                                    text, str(exc))
                    )  # fmt: skip
        except Exception as exc:  # a poison record must never stop the partition
            reason = str(exc) or type(exc).__name__
            batch.dead.append(
                DeadLetter(reason[:1000], msg.topic, msg.partition, msg.offset, msg.key, value)
            )
    return batch


@dataclass
class GoalBatch:
    items: list[GoalItem] = field(default_factory=list)
    notices: dict[str, Notice] = field(default_factory=dict)  # the latest per objective
    marks: list[Watermark] = field(default_factory=list)


def parse_goal_records(records: Sequence[Any]) -> GoalBatch:
    """Split goal-event and measurement records into goal items, notices and watermarks.
    An undecodable goal event is logged and skipped (the relay only sends stored ones)."""
    batch = GoalBatch()
    latest: dict[str, Cause] = {}
    for event in records:
        msg = event.message
        headers = header_map(msg.headers)
        try:
            if msg.topic == KR_MEASUREMENTS.name:
                measured = fold_measurement(msg.value, latest)
                if measured is not None:
                    position, source = measured
                    batch.marks.append(
                        Watermark("measure", KR_MEASUREMENTS.name, msg.partition, source, position)
                    )
                continue
            mark = watermark_of(headers, msg.value)
            if mark is not None:
                batch.marks.append(Watermark("goal", GOAL_EVENTS.name, msg.partition, -1, mark))
            else:
                batch.items.append(goal_item(msg.value, position_header(headers)))
        except Exception:
            log.exception(
                "skipping undecodable record %s[%s]@%s", msg.topic, msg.partition, msg.offset
            )
    batch.notices = notices_of(latest)
    return batch


def _tracer() -> Callable[[str, float, int, int, int], None]:
    """OKR_PROCESSOR_TRACE=FILE: one line per batch (wall time, agent, seconds, records,
    items, notices) appended to FILE, for profiling; otherwise nothing."""
    path = os.environ.get("OKR_PROCESSOR_TRACE")
    if not path:
        return lambda *_: None
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the worker's lifetime

    def trace(agent: str, started: float, records: int, items: int, notices: int) -> None:
        took = time.perf_counter() - started
        out.write(f"{time.time():.3f} {agent} {took:.4f} {records} {items} {notices}\n")

    return trace


async def shielded(work: Awaitable[T]) -> T:
    """Run an agent's work on the records it took to the end, even when the agent is
    cancelled (stop, rebalance), then re-raise the cancellation: take_events acks the
    records when the loop moves on, also on cancellation, so half-done work would be
    committed and its remainder (notices, slices, watermarks) lost."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def faust_settings(settings: Settings) -> dict[str, Any]:
    """faust settings: at-least-once, short group timeouts (Tansu), a tuned fetch path."""
    return {
        # faust's aiokafka transport with a short fetch wait (see transport.py).
        "broker": broker_url(settings.bootstrap_servers),
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        # faust's own directory (its table layout; the tables are in memory): under the data
        # directory, not the working directory.
        "datadir": str(settings.data_dir / "faust" / "{conf.name}"),
        "web_enabled": False,
        "autodiscover": False,
        "topic_partitions": settings.kafka_partitions,
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.kafka_session_timeout_ms / 1000,
        "broker_rebalance_timeout": settings.kafka_rebalance_timeout_ms / 1000,
        "broker_heartbeat_interval": 1.0,
        "broker_max_poll_interval": max(settings.kafka_max_poll_interval_ms / 1000, 30.0),
        "broker_request_timeout": 30.0,
        "broker_commit_interval": 1.0,
        "broker_commit_every": 50_000,
        # The fetch path: no waiting for empty, and a read-ahead bounded to about a batch
        # (relay records of 500 readings in a 40,000-record buffer held over a gigabyte while
        # the database was busy; a 1,000-record buffer of 100-reading records holds ~33 MB:
        # with 2,000, the processor peaked at 526 MB at 100k objectives). A poll returns at
        # most half of the smallest agent buffer: delivering a poll into a full buffer
        # blocks the consumer's loop, and blocked through a long pass it missed its poll
        # interval, left the group and stalled (seen at 100k objectives with 500-record
        # buffers). Fetches
        # of 1 MB a partition keep up with the agents (a fetch takes a millisecond or two)
        # and hold a quarter of what 4 MB ones did (fetched records wait in the consumer
        # for the buffers to take them).
        "broker_max_poll_records": min(TAKE, 2 * GOAL_TAKE) // 2,
        "consumer_max_fetch_size": 1024 * 1024,
        "stream_buffer_maxsize": TAKE,
        "stream_wait_empty": False,
        "producer_linger": 0.005,
        "producer_max_batch_size": 1024 * 1024,
        "producer_max_request_size": 16 * 1024 * 1024,
        # acks=all, as the relay and ingest produce: a measurement notice or a detection
        # acknowledged by a leader that then fails would be lost (deploy/README.md).
        "producer_acks": -1,
    }


def build_app(settings: Settings, projector: Projector, *, app_id: str | None = None) -> faust.App:
    """The processor's faust app over `projector` (its composition root is main.py)."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust makes one level
    app = faust.App(app_id or settings.processor_group, **faust_settings(settings))
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projection-store")

    async def in_db(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def topic(*names: str, maxsize: int | None = None) -> Any:
        return app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.kafka_partitions,
            internal=False,
            maxsize=maxsize,
        )

    readings = topic(KPI_READINGS.name)
    goals = topic(GOAL_EVENTS.name, KR_MEASUREMENTS.name, maxsize=2 * GOAL_TAKE)
    measurements = topic(KR_MEASUREMENTS.name)
    dlq = topic(READINGS_DLQ.name)
    detections = topic(DETECTIONS.name)

    trace = _tracer()
    kpi_activity = Activity()

    def kpi_step(records: Sequence[Any]) -> tuple[KpiBatch, dict[int, list[Notice]]]:
        """Apply the records' readings; return the measurement notices by partition."""
        started = time.perf_counter()
        batch = KpiBatch()
        latest: dict[str, Notice] = {}
        pending: list[ReadingRow] = []
        count = 0
        # Parsed and applied in slices of about APPLY_ROWS readings (one transaction each;
        # the watermarks go with the last), so memory stays bounded however many readings
        # the batch's records carry.
        for i in range(0, len(records), PARSE_RECORDS):
            part = parse_kpi_records(projector, records[i : i + PARSE_RECORDS])
            pending += part.rows
            batch.marks += part.marks
            batch.forward += part.forward
            batch.dead += part.dead
            batch.held += part.held
            last = i + PARSE_RECORDS >= len(records)
            if len(pending) >= APPLY_ROWS or last:
                for n in projector.apply_readings(pending, batch.marks if last else ()):
                    keep_latest(latest, n.objective_id, n)
                count += len(pending)
                pending = []
        if batch.held:
            log.info("holding %d readings of KPIs not known yet", len(batch.held))
            batch.dead += held.hold(projector, batch.held)
        by_partition: dict[int, list[Notice]] = {}
        for oid in sorted(latest):
            q = partition_of(oid, settings.kafka_partitions)
            by_partition.setdefault(q, []).append(latest[oid])
        trace("kpi", started, len(records), count, len(latest))
        return batch, by_partition

    async def kpi_pass(records: Sequence[Any]) -> None:
        batch, notices = await in_db(kpi_step, records)
        for d in batch.dead:
            await dlq.send(key=d.key, value=d.encode())
        for q, found in sorted(notices.items()):
            for i in range(0, len(found), BUNDLE):
                bundle = encode_measurements(found[i : i + BUNDLE])
                await measurements.send(key=None, value=bundle, partition=q)
        for position, source in batch.forward:
            for q in range(settings.kafka_partitions):
                await measurements.send(
                    key=None, value=encode_measure_watermark(position, source), partition=q
                )

    @app.agent(readings, name="kpi")
    async def kpi_agent(stream: Any) -> None:
        async for records in stream.take_events(TAKE, within=WITHIN_S):
            with kpi_activity.batch():
                await shielded(kpi_pass(records))

    passes = Passes()

    def goal_step(records: Sequence[Any]) -> bool:
        """Apply the take's goal events, defer its notices; whether any were deferred. A
        take that fails (not for the database) is applied stream by stream: a stream that
        fails on its own is parked, and the rest of the take flows."""
        started = time.perf_counter()
        batch = parse_goal_records(records)
        notices = [batch.notices[k] for k in sorted(batch.notices)]
        try:
            deferred = projector.apply_goal_take(batch.items, notices, batch.marks)
        except DatabaseUnavailableError:
            raise
        except Exception:
            log.exception("a take of goal events failed; applying it stream by stream")
            deferred, _ = projector.apply_goal_take_by_stream(batch.items, notices, batch.marks)
        trace("objective", started, len(records), len(batch.items), len(notices))
        return deferred

    @app.agent(goals, name="objective")
    async def objective_agent(stream: Any) -> None:
        async for records in stream.take_events(GOAL_TAKE, within=WITHIN_S):
            try:
                if await shielded(in_db(goal_step, records)):
                    passes.deferred()
            except Exception:
                # The database (or the stream-by-stream retry) failed: acking these
                # records would lose them. Stop without committing; the supervisor
                # restarts the worker and they are redelivered.
                log.critical("objective take failed; exiting uncommitted", exc_info=True)
                os._exit(70)

    def pass_slice(upto: int) -> bool:
        started = time.perf_counter()
        done, more = projector.evaluate_pending(upto, OBJECTIVES_PER_TX)
        trace("objective-slice", started, 0, 0, done)
        return more

    @app.timer(PASS_CHECK_S)  # type: ignore[untyped-decorator]
    async def evaluate_deferred() -> None:
        """A pass over the notices deferred up to now, slice by slice (what is deferred
        meanwhile waits for the next pass)."""
        if not passes.due(kpi_activity):
            return
        passes.start()
        try:
            upto = await in_db(projector.pending_bound)
            while upto is not None:
                try:
                    more = await in_db(pass_slice, upto)
                except DatabaseUnavailableError:
                    raise
                except Exception:  # an objective whose evaluation fails: find it, go on
                    log.exception("a slice of a pass failed; re-evaluating it one by one")
                    await in_db(projector.set_aside_failing, upto, OBJECTIVES_PER_TX)
                    more = True
                if not more:
                    break
        except Exception:  # the database, say: the notices stay deferred for the next pass
            log.exception("pass over deferred notices failed; retrying in %.0f s", PASS_HOLD_S)
            passes.failed()

    @app.task  # type: ignore[untyped-decorator]
    async def retry_set_aside() -> None:
        """A worker starts, maybe with a fix: the parked goal events and the objectives set
        aside are tried again."""
        await in_db(projector.retry_parked)
        if await in_db(projector.retry_set_aside):
            passes.deferred()

    @app.timer(TICK_S)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        """The time-driven rules. A failure (the database, say) is logged and the next tick
        tries again: an exception would end the timer and crash the worker."""
        try:
            if await in_db(projector.defer_due_later):
                passes.deferred()
            # Step by step, so batches interleave between the steps of a long tick.
            after: tuple[str, str] | None = TICK_START
            while after is not None:
                after = await in_db(projector.tick_step, after)
        except Exception:
            log.exception("tick failed; the next one, in %.0f s, tries again", TICK_S)

    @app.timer(RELEASE_S)  # type: ignore[untyped-decorator]
    async def release_held() -> None:
        """Direct readings held for their KPI's definition (services/processor/held.py):
        those whose KPI is known now are applied, those past the grace dead-lettered."""
        grace = timedelta(seconds=settings.unknown_kpi_grace_s)
        try:
            released = await in_db(held.release, projector, grace)
            if released.applied:
                passes.deferred()
            if released.dead:
                for _, d in released.dead:
                    await dlq.send(key=d.key, value=d.encode())
                await app.producer.flush()
                await in_db(held.forget, projector, [i for i, _ in released.dead])
            if released.applied or released.dead:
                log.info(
                    "held readings: %d applied, %d dead-lettered",
                    released.applied,
                    len(released.dead),
                )
        except Exception:
            log.exception("releasing held readings failed; retrying in %.0f s", RELEASE_S)

    @app.timer(TRIM_S)  # type: ignore[untyped-decorator]
    async def trim() -> None:
        await in_db(release_free_memory)

    @app.timer(OUTBOX_S)  # type: ignore[untyped-decorator]
    async def publish_detections() -> None:
        """The detections outbox to okr.detections.v1, at least once: a failure leaves the
        rows for the next round."""
        try:
            generation, pending = await in_db(projector.outbox)
            if not pending:
                return
            for _, _, key, value in pending:
                await detections.send(key=key.encode(), value=value)
            await app.producer.flush()
            await in_db(projector.published, generation, pending[-1][0])
        except Exception:
            log.exception("publishing detections failed; retrying in %.0f s", OUTBOX_S)

    return app

"""Processor integration harness: events into an event store, the relay's wire format onto
Kafka, the processor as a subprocess, and a wait for its applied position."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
from kafka import KafkaProducer

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
from services.eventstore.store import EventStore
from services.kafka.partitioning import partition_of
from services.processor.digest import content_hash
from services.projectionstore.db import Database
from services.projectionstore.meta import links_key, live_generation
from services.projectionstore.positions import applied_position
from services.projectionstore.schema import META_DDL, META_TABLE, Tables
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def store_events(settings: Settings, evs: Sequence[events.Event]) -> list[tuple[int, events.Event]]:
    """Append to the settings' event store; return (position, event) in log order."""
    store = EventStore.from_settings(settings)
    try:
        after = store.max_position()
        for i in range(0, len(evs), 2000):
            store.append(evs[i : i + 2000])
        found = []
        while notes := store.notifications(after, 10_000):
            found += [(n.position, n.decode()) for n in notes]
            after = notes[-1].position
        return found
    finally:
        store.close()


Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]], int | None]
"""(topic, key, value, headers, partition or None for where the key goes)."""


def relay_records(
    entries: Iterable[tuple[int, events.Event]], per_record: int = 500, partitions: int = 4
) -> list[Record]:
    """Records in the relay's format: one per goal event, keyed by its stream; the readings
    whose KPIs share a partition in JSON arrays of up to `per_record`, sent to it unkeyed."""
    out: list[Record] = []
    pending: dict[int, list[tuple[int, bytes]]] = defaultdict(list)

    def flush(part: int) -> None:
        batch = pending.pop(part, [])
        if batch:
            value = b"[" + b",".join(b for _, b in batch) + b"]"
            headers = [
                (HEADER_CONTENT, CONTENT_READING_BATCH.encode()),
                (HEADER_POSITION, str(batch[-1][0]).encode()),
            ]
            out.append((KPI_READINGS.name, None, value, headers, part))

    for position, e in entries:
        if isinstance(e, events.ReadingRecorded):
            part = partition_of(str(e.kpi_id), partitions)
            pending[part].append((position, events.encode(e)))
            if len(pending[part]) >= per_record:
                flush(part)
        else:
            headers = [
                (HEADER_EVENT_ID, str(e.event_id).encode()),
                (HEADER_EVENT_TYPE, e.type.encode()),
                (HEADER_POSITION, str(position).encode()),
            ]
            record = (GOAL_EVENTS.name, str(e.stream_id).encode(), events.encode(e), headers, None)
            out.append(record)
    for part in list(pending):
        flush(part)
    return out


def produce(
    bootstrap: str,
    records: Sequence[Record],
    watermark: int | None,
    partitions: int,
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_request_size=16 * 1024 * 1024,
        batch_size=1024 * 1024,
    )
    try:
        for topic, key, value, headers, partition in records:
            producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        if watermark is not None:
            send_watermarks(producer, watermark, partitions)
        producer.flush()
    finally:
        producer.close()


def send_watermarks(producer: KafkaProducer, position: int, partitions: int) -> None:
    value = orjson.dumps({"watermark": position})
    headers = [
        (HEADER_CONTENT, CONTENT_WATERMARK.encode()),
        (HEADER_WATERMARK, str(position).encode()),
    ]
    for topic in (GOAL_EVENTS.name, KPI_READINGS.name):
        for p in range(partitions):
            producer.send(topic, key=None, value=value, headers=headers, partition=p)


def processor_env(settings: Settings, bootstrap: str, group: str) -> dict[str, str]:
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(settings.data_dir),
        "OKR_KAFKA_BOOTSTRAP": bootstrap,
        "OKR_PROCESSOR_GROUP": group,
        "OKR_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "OKR_UNKNOWN_KPI_GRACE_S": str(settings.unknown_kpi_grace_s),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("OKR_DATABASE_URL", None)
    if settings.database_url:
        env["OKR_DATABASE_URL"] = settings.database_url
    return env


class ProcessorProcess:
    """`python -m services.processor.main` as a child process."""

    def __init__(self, settings: Settings, bootstrap: str, group: str, log: Path) -> None:
        self.env = processor_env(settings, bootstrap, group)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessorProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.processor.main"],
            env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def projection_db(settings: Settings) -> Database:
    return Database.from_settings(settings, settings.projections_db_path)


def position_of(db: Database, partitions: int) -> int:
    try:
        with db.transaction(write=False) as cur:
            cur.execute(META_DDL)
            return applied_position(cur, Tables(live_generation(cur)), partitions)
    except Exception:
        return 0


def wait_for_position(
    db: Database,
    position: int,
    partitions: int,
    timeout_s: float = 60,
    procs: Sequence[ProcessorProcess] = (),
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if position_of(db, partitions) >= position:
            return
        for p in procs:
            assert p.proc is None or p.proc.poll() is None, f"processor exited; see {p.log}"
        time.sleep(0.2)
    logs = "\n".join(p.log.read_text()[-3000:] for p in procs if p.log.exists())
    raise AssertionError(f"applied position {position_of(db, partitions)} < {position}\n{logs}")


def live_hash(db: Database) -> dict[str, str]:
    with db.transaction(write=False) as cur:
        return content_hash(cur, Tables(live_generation(cur)))


def readings_applied(db: Database) -> int:
    """Readings in the live generation's projection (0 before the tables exist)."""
    try:
        with db.transaction(write=False) as cur:
            row = cur.execute(
                f"SELECT COUNT(*) FROM {Tables(live_generation(cur)).readings}"
            ).fetchone()
            return int(row[0]) if row else 0
    except Exception:  # tables not created yet
        return 0


def count_readings(settings: Settings) -> int:
    """`readings_applied` on a connection of its own."""
    db = projection_db(settings)
    try:
        return readings_applied(db)
    finally:
        db.close()


def replay_hash(settings: Settings) -> dict[str, str]:
    """Rebuild every projection from the event-store log; the content hash of the result."""
    from services.processor.replay import rebuild

    db = projection_db(settings)
    store = EventStore.from_settings(settings)
    try:
        rebuild(db, store)
        with db.transaction(write=False) as cur:
            tokens = cur.execute(
                f"SELECT key FROM {META_TABLE} WHERE key LIKE ?", ("links_token:%",)
            ).fetchall()
            live = links_key(Tables(live_generation(cur)))
        assert {k for (k,) in tokens} <= {live}, "the dropped generations' links tokens stay"
        return live_hash(db)
    finally:
        store.close()
        db.close()

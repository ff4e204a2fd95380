"""Processor benchmark (not a test): `run(sizes) -> dict`.

- end-to-end readings/s: event store → relay-format records (up to 500 readings each, as the
  relay sends them) → Kafka → the processor subprocess → projection rows (applied position)
- raw Kafka: the same records produced with kafka-python and consumed with aiokafka
- naive: a per-event faust agent with a Table (`table[k] += v`), one reading per record
- replay: events/s of `services.processor.replay.rebuild` over the same store
- processor RSS at the end
Run: `.venv/bin/python -m tests.bench.bench_processor [readings]`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

import events
from contracts.topics import TopicSpec
from services.broker.embedded import EmbeddedBroker
from services.eventstore.store import EventStore
from services.kafka.admin import ensure_topics
from services.processor.replay import rebuild
from services.settings import Settings
from tests.integration.processor.harness import (
    ROOT,
    ProcessorProcess,
    position_of,
    produce,
    projection_db,
    relay_records,
    send_watermarks,
    wait_for_position,
)
from tests.support.ports import free_port
from tests.unit.processor.builders import Log, synthetic

DEFAULT_SIZES = {"readings": 200_000, "objectives": 1_000, "kpis": 200, "naive": 20_000}


def _readings(kpis: list[uuid.UUID], count: int, org: str = "acme") -> list[events.Event]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[events.Event] = []
    for i in range(count):
        kpi = kpis[i % len(kpis)]
        at = t0 + timedelta(seconds=37 * i)
        out.append(
            events.ReadingRecorded(
                event_id=uuid.uuid4(),
                org_id=org,
                stream_id=uuid.uuid4(),
                stream_version=1,
                occurred_at=at,
                recorded_at=at,
                kpi_id=kpi,
                value=float(i % 997),
                observed_at=at,
                reading_id=f"b{i}",
            )
        )
    return out


def _store(settings: Settings, evs: list[events.Event]) -> None:
    store = EventStore.from_settings(settings)
    try:
        for i in range(0, len(evs), 5000):
            store.append(evs[i : i + 5000])
    finally:
        store.close()


def _entries(settings: Settings) -> list[tuple[int, events.Event]]:
    store = EventStore.from_settings(settings)
    try:
        found: list[tuple[int, events.Event]] = []
        after = 0
        while notes := store.notifications(after, 20_000):
            found += [(n.position, n.decode()) for n in notes]
            after = notes[-1].position
        return found
    finally:
        store.close()


async def _consume(bootstrap: str, topic: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"bench-{uuid.uuid4().hex[:8]}", max_partition_fetch_bytes=16 * 1024 * 1024,
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            seen += sum(len(v) for v in batch.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def bench_raw(bootstrap: str, records: list[Any], readings: int) -> dict[str, float]:
    topic = f"bench.raw.{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, 4, specs=[TopicSpec(topic, "k", "v")])
    started = time.perf_counter()
    produce(bootstrap, [(topic, k, v, h) for _, k, v, h in records], None, 4)
    produced = time.perf_counter() - started
    consumed = asyncio.run(_consume(bootstrap, topic, len(records)))
    total = produced + consumed
    return {
        "raw_produce_records_per_s": len(records) / produced,
        "raw_consume_records_per_s": len(records) / consumed,
        "raw_readings_per_s": readings / total,
    }


def bench_naive(bootstrap: str, count: int) -> dict[str, float]:
    topic = f"bench.naive.{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, 4, specs=[TopicSpec(topic, "k", "v")])
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    kpis = [str(uuid.uuid4()) for _ in range(50)]
    for i in range(count):
        k = kpis[i % len(kpis)]
        producer.send(topic, key=k.encode(), value=orjson.dumps({"kpi_id": k, "value": float(i)}))
    producer.flush()
    producer.close()
    group = f"naive-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.naive_agent", bootstrap, topic, group, str(count)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("done")), None)
    if line is None:
        return {"naive_readings_per_s": 0.0}
    seconds = float(line.split()[1])
    return {"naive_readings_per_s": count / seconds if seconds else 0.0}


def run(sizes: dict[str, int] | None = None) -> dict[str, float]:
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        log = Log()
        _, kpis = synthetic(log, objectives=sizes["objectives"], kpis=sizes["kpis"], readings=0)
        _store(settings, [e for _, e in log.entries])
        _store(settings, _readings(kpis, sizes["readings"]))
        with EmbeddedBroker(free_port(), partitions=4, log_path=Path(tmp) / "tansu.log") as broker:
            proc = ProcessorProcess(
                settings, broker.bootstrap, f"bench-{uuid.uuid4().hex[:8]}", Path(tmp) / "p.log"
            )
            proc.start()
            db = projection_db(settings)
            # Let the worker join its group first: the figure is the processing rate.
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
            send_watermarks(producer, 0, 4)
            producer.flush()
            producer.close()
            wait_for_position(db, 0, 4, procs=[proc])
            deadline = time.monotonic() + 60
            while position_of(db, 4) < 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(8)
            started = time.perf_counter()
            entries = _entries(settings)
            records = relay_records(entries)
            last = entries[-1][0]
            produce(broker.bootstrap, records, last, 4)
            wait_for_position(db, last, 4, timeout_s=1800, procs=[proc])
            elapsed = time.perf_counter() - started
            assert proc.proc is not None
            rss = psutil.Process(proc.proc.pid).memory_info().rss / 2**20
            proc.stop()
            db.close()
            results["e2e_readings_per_s"] = sizes["readings"] / elapsed
            results["e2e_seconds"] = elapsed
            results["processor_rss_mb"] = rss
            results.update(bench_raw(broker.bootstrap, records, sizes["readings"]))
            results.update(bench_naive(broker.bootstrap, sizes["naive"]))
        db = projection_db(settings)
        store = EventStore.from_settings(settings)
        try:
            stats = rebuild(db, store)
        finally:
            store.close()
            db.close()
        results["replay_events_per_s"] = stats.events / stats.seconds
        results["replay_events"] = float(stats.events)
    results["e2e_vs_raw"] = results["e2e_readings_per_s"] / results["raw_readings_per_s"]
    if results["naive_readings_per_s"]:
        results["e2e_vs_naive"] = results["e2e_readings_per_s"] / results["naive_readings_per_s"]
    return results


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SIZES["readings"]
    for key, value in run({"readings": n}).items():
        print(f"{key:28s} {value:12,.1f}")

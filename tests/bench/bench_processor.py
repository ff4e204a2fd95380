"""Processor benchmark (not a test): `run(sizes) -> dict`.

- end-to-end readings/s: event store → relay-format records (up to 100 readings each, packed
  per partition as the relay sends them) → Kafka → the processor subprocess → projection
  rows (applied position); the objectives, key results and KPIs are relayed and applied
  first, untimed
- raw Kafka: the same records produced with kafka-python and consumed with aiokafka
- naive: a per-event faust agent with a Table (`table[k] += v`), one reading per record
- replay: events/s of `services.processor.replay.rebuild` over the same store
- processor RSS at the end, and its peak while the readings flow (sampled every 0.2 s;
  OKR_BENCH_RSS_LOG=FILE appends each sample, "unix-time MB", to FILE)
Run: `.venv/bin/python -m tests.bench.bench_processor [readings]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
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
from services.processor.runtime import tune_gc
from services.relay.records import to_records
from services.settings import Settings
from tests.bench.naive_agent import changelog_topic
from tests.bench.profiling import start_profile, stop_profile
from tests.integration.processor.harness import (
    ROOT,
    ProcessorProcess,
    produce,
    projection_db,
    send_watermarks,
    wait_for_position,
)
from tests.support.ports import free_port
from tests.unit.processor.builders import Log, synthetic

# Comma-separated phases to run (default all): e2e, raw, naive, replay.
PHASES = set((os.environ.get("OKR_BENCH_PHASES") or "e2e,raw,naive,replay").split(","))


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


def _end_position(settings: Settings) -> int:
    store = EventStore.from_settings(settings)
    try:
        return store.max_position()
    finally:
        store.close()


def _relay_records(settings: Settings, after: int = 0) -> tuple[list[Any], int]:
    """The relay's records for the whole log, built by the relay's own pure functions
    (services.relay.records.to_records over relay_batch_size slices of the notification
    log, the stored canonical JSON unchanged), and the log's last position."""
    store = EventStore.from_settings(settings)
    try:
        out: list[Any] = []
        while notes := store.notifications(after, settings.relay_batch_size):
            found, _ = to_records(
                notes, settings.relay_readings_per_record, settings.kafka_partitions
            )
            out += [(r.topic, r.key, r.value, r.headers, r.partition) for r in found]
            after = notes[-1].position
        return out, after
    finally:
        store.close()


def _relay(
    settings: Settings, bootstrap: str, after: int = 0, until: int | None = None
) -> tuple[list[Any], int]:
    """What the relay does, minus its progress bookkeeping: read relay_batch_size slices of
    the notification log after position `after` (up to `until`) and send each slice's
    records (services.relay.records) as soon as it is read, then the watermarks. Returns
    the records sent and the last position."""
    store = EventStore.from_settings(settings)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_request_size=16 * 1024 * 1024,
        batch_size=1024 * 1024,
    )
    out: list[Any] = []
    try:
        while True:
            size = settings.relay_batch_size
            if until is not None:
                size = min(size, until - after)
            notes = store.notifications(after, size) if size > 0 else []
            notes = [n for n in notes if until is None or n.position <= until]
            if not notes:
                break
            found, _ = to_records(
                notes, settings.relay_readings_per_record, settings.kafka_partitions
            )
            for r in found:
                producer.send(
                    r.topic, key=r.key, value=r.value, headers=r.headers, partition=r.partition
                )
                out.append((r.topic, r.key, r.value, r.headers, r.partition))
            after = notes[-1].position
        send_watermarks(producer, after, 4)
        producer.flush()
    finally:
        producer.close()
        store.close()
    return out, after


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
    produce(bootstrap, [(topic, k, v, h, p) for _, k, v, h, p in records], None, 4)
    produced = time.perf_counter() - started
    consumed = asyncio.run(_consume(bootstrap, topic, len(records)))
    total = produced + consumed
    return {
        "raw_produce_records_per_s": len(records) / produced,
        "raw_consume_records_per_s": len(records) / consumed,
        "raw_consume_readings_per_s": readings / consumed,
        "raw_readings_per_s": readings / total,
    }


def bench_naive(bootstrap: str, settings: Settings, count: int) -> dict[str, float]:
    """The first `count` readings of the same store, one reading.recorded event per record
    (keyed by KPI), through tests.bench.naive_agent (`table[kpi_id] += value` per event)."""
    topic = f"bench.naive.{uuid.uuid4().hex[:6]}"
    group = f"naive-{uuid.uuid4().hex[:8]}"
    ensure_topics(
        bootstrap,
        4,
        specs=[TopicSpec(topic, "k", "v"), TopicSpec(changelog_topic(group), "k", "v")],
    )
    store = EventStore.from_settings(settings)
    sent = 0
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=1024 * 1024)
    try:
        after = 0
        while sent < count and (notes := store.notifications(after, 5000)):
            for n in notes:
                if n.type == "reading.recorded" and sent < count:
                    kpi = orjson.loads(n.state)["kpi_id"]
                    producer.send(topic, key=kpi.encode(), value=n.state)
                    sent += 1
            after = notes[-1].position
        producer.flush()
    finally:
        producer.close()
        store.close()
    timeout = float(os.environ.get("OKR_NAIVE_TIMEOUT", "300"))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.naive_agent", bootstrap, topic, group, str(sent)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    found = re.search(r"done (\S+) (\d+)", proc.stdout)
    if found is None:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"naive agent printed no result (exit {proc.returncode}): {tail}")
    seconds = float(found.group(1))
    return {"naive_readings_per_s": sent / seconds if seconds else 0.0, "naive_readings": sent}


class PeakRss:
    """The highest RSS of process `pid` while the block runs, sampled every `every_s`."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.mb = 0.0
        self._log = os.environ.get("OKR_BENCH_RSS_LOG")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        out = open(self._log, "a", buffering=1) if self._log else None  # noqa: SIM115
        try:
            while True:
                with contextlib.suppress(psutil.Error):
                    mb = self.process.memory_info().rss / 2**20
                    self.mb = max(self.mb, mb)
                    if out is not None:
                        out.write(f"{time.time():.3f} {mb:.1f}\n")
                if self._done.wait(self.every_s):
                    return
        finally:
            if out is not None:
                out.close()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def bench_e2e(
    tmp: Path, settings: Settings, bootstrap: str, readings: int, setup_end: int
) -> tuple[dict[str, float], list[Any]]:
    """The goal events (positions up to `setup_end`: objectives, key results, KPIs) are
    relayed and applied first, untimed; then the readings are timed from the first relayed
    record until the applied position covers the last."""
    proc = ProcessorProcess(settings, bootstrap, f"bench-{uuid.uuid4().hex[:8]}", tmp / "p.log")
    proc.start()
    db = projection_db(settings)
    try:
        # Let the worker join its group first: the figure is the processing rate.
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        send_watermarks(producer, 0, 4)
        producer.flush()
        producer.close()
        wait_for_position(db, 0, 4, procs=[proc])
        _, goals_end = _relay(settings, bootstrap, until=setup_end)
        wait_for_position(db, goals_end, 4, timeout_s=1800, procs=[proc])
        time.sleep(3)
        assert proc.proc is not None
        spy = start_profile(proc.proc.pid, "processor_e2e")
        with PeakRss(proc.proc.pid) as peak:
            started = time.perf_counter()
            records, last = _relay(settings, bootstrap, after=goals_end)
            wait_for_position(db, last, 4, timeout_s=1800, procs=[proc])
            elapsed = time.perf_counter() - started
        stop_profile(spy)
        rss = psutil.Process(proc.proc.pid).memory_info().rss / 2**20
    finally:
        proc.stop()
        db.close()
    return {
        "e2e_readings_per_s": readings / elapsed,
        "e2e_seconds": elapsed,
        "processor_rss_mb": rss,
        "processor_peak_rss_mb": peak.mb,
    }, records


def bench_replay(settings: Settings) -> dict[str, float]:
    """`okrstream replay`'s rebuild, with the GC tuning its command applies."""
    tune_gc()
    db = projection_db(settings)
    store = EventStore.from_settings(settings)
    try:
        stats = rebuild(db, store)
    finally:
        store.close()
        db.close()
    return {
        "replay_events_per_s": stats.events / stats.seconds,
        "replay_events": float(stats.events),
        "replay_seconds": stats.seconds,
    }


def run(sizes: dict[str, int] | None = None) -> dict[str, float]:
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        log = Log()
        _, kpis = synthetic(log, objectives=sizes["objectives"], kpis=sizes["kpis"], readings=0)
        _store(settings, [e for _, e in log.entries])
        setup_end = _end_position(settings)
        _store(settings, _readings(kpis, sizes["readings"]))
        with EmbeddedBroker(free_port(), partitions=4, log_path=Path(tmp) / "tansu.log") as broker:
            records: list[Any] = []
            if "e2e" in PHASES:
                found, records = bench_e2e(
                    Path(tmp), settings, broker.bootstrap, sizes["readings"], setup_end
                )
                results.update(found)
            if "raw" in PHASES:
                records = records or _relay_records(settings, setup_end)[0]
                results.update(bench_raw(broker.bootstrap, records, sizes["readings"]))
            if "naive" in PHASES:
                results.update(bench_naive(broker.bootstrap, settings, sizes["naive"]))
        if "replay" in PHASES:
            results.update(bench_replay(settings))
    if "e2e_readings_per_s" in results and "raw_readings_per_s" in results:
        results["e2e_vs_raw"] = results["e2e_readings_per_s"] / results["raw_readings_per_s"]
    if "replay_events_per_s" in results and "raw_consume_records_per_s" in results:
        results["replay_vs_raw_consume_readings"] = (
            results["replay_events_per_s"] / (results["raw_consume_readings_per_s"])
        )
    if results.get("naive_readings_per_s") and "e2e_readings_per_s" in results:
        results["e2e_vs_naive"] = results["e2e_readings_per_s"] / results["naive_readings_per_s"]
    return results


if __name__ == "__main__":
    # args: [readings] [objectives] [kpis]
    keys = ["readings", "objectives", "kpis"]
    given = {k: int(v) for k, v in zip(keys, sys.argv[1:], strict=False)}
    for key, value in run(given).items():
        print(f"{key:32s} {value:14,.3f}")

"""SIGKILL mid-stream, scale-out to two workers, and the dead-letter topic."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from contracts.topics import KPI_READINGS, READINGS_DLQ
from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.integration.processor.harness import (
    ProcessorProcess,
    count_readings,
    live_hash,
    produce,
    projection_db,
    relay_records,
    replay_hash,
    store_events,
    wait_for_position,
)
from tests.unit.processor.builders import Log, synthetic

pytestmark = pytest.mark.integration


def feed(settings: Settings, broker: EmbeddedBroker, readings: int) -> int:
    log = Log()
    synthetic(log, objectives=60, kpis=12, readings=readings)
    entries = store_events(settings, [e for _, e in log.entries])
    last = entries[-1][0]
    produce(broker.bootstrap, relay_records(entries, per_record=100), last, 4)
    return last


def test_sigkill_mid_stream_then_restart_equals_a_clean_replay(
    settings: Settings, fresh_broker: EmbeddedBroker, unique_group: str, tmp_path: Path
) -> None:
    last = feed(settings, fresh_broker, readings=60_000)
    first = ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / "p1.log")
    first.start()
    deadline = time.monotonic() + 60
    while count_readings(settings) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()  # at the first sign of progress: batches are in flight
    applied = count_readings(settings)
    assert 0 < applied < 60_000, f"killed at {applied} readings: not mid-stream"
    second = ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / "p2.log")
    second.start()
    db = projection_db(settings)
    try:
        wait_for_position(db, last, 4, procs=[second])
        live = live_hash(db)
    finally:
        second.stop()
        db.close()
    assert live == replay_hash(settings)


def test_two_workers_in_one_group_equal_a_clean_replay(
    settings: Settings, fresh_broker: EmbeddedBroker, unique_group: str, tmp_path: Path
) -> None:
    workers = [
        ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    for w in workers:
        w.start()
    time.sleep(3)  # both join before the data arrives, so the partitions are shared
    last = feed(settings, fresh_broker, readings=10_000)
    db = projection_db(settings)
    try:
        wait_for_position(db, last, 4, procs=workers)
        live = live_hash(db)
    finally:
        for w in workers:
            w.stop()
        db.close()
    assert live == replay_hash(settings)
    logs = [w.log.read_text() for w in workers]
    assert all("processor started" in text for text in logs)


def test_malformed_readings_go_to_the_dlq_and_the_rest_flow(
    tmp_path: Path, fresh_broker: EmbeddedBroker, unique_group: str
) -> None:
    # A reading of an unknown KPI waits a second for its definition, then is dead.
    settings = Settings(data_dir=tmp_path / "data", unknown_kpi_grace_s=1)
    log = Log()
    kpi = uuid.uuid4()
    log.kpi(kpi, target=1.0, amber=0.9, interval="day", aggregation="sum")
    entries = store_events(settings, [e for _, e in log.entries])
    last = entries[-1][0]
    proc = ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / "p.log")
    proc.start()
    db = projection_db(settings)
    try:
        produce(fresh_broker.bootstrap, relay_records(entries), last, 4)
        wait_for_position(db, last, 4, procs=[proc])  # the KPI is known now
        good = {
            "kpi_id": str(kpi), "value": 3.5, "observed_at": "2026-02-01T00:00:00Z",
            "org_id": "acme",
        }  # fmt: skip
        bad = [
            b"\x00\xff garbage",
            b'{"kpi_id": "nope"',
            orjson.dumps({**good, "value": "x"}),
            orjson.dumps({**good, "kpi_id": str(uuid.uuid4())}),
            orjson.dumps({**good, "org_id": "other"}),
        ]
        producer = KafkaProducer(bootstrap_servers=fresh_broker.bootstrap)
        key = str(kpi).encode()
        for i, value in enumerate(bad):
            producer.send(KPI_READINGS.name, key=key, value=value, partition=i % 4)
        producer.send(KPI_READINGS.name, key=key, value=orjson.dumps(good), partition=0)
        producer.send(KPI_READINGS.name, key=key, value=orjson.dumps(good), partition=1)
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 60
        while count_readings(settings) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        consumer = KafkaConsumer(bootstrap_servers=fresh_broker.bootstrap)
        parts = [TopicPartition(READINGS_DLQ.name, p) for p in range(4)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        dead: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(dead) < len(bad):
            for records in consumer.poll(timeout_ms=500).values():
                dead += [orjson.loads(m.value) for m in records]
        consumer.close()
    finally:
        proc.stop()
        db.close()
    assert len(dead) == len(bad)
    assert all(d["topic"] == KPI_READINGS.name and d["reason"] for d in dead)
    assert all(isinstance(d["offset"], int) for d in dead)
    # The valid reading was stored once (a derived reading id makes its twin a duplicate).
    assert count_readings(settings) == 1
    assert datetime.now(UTC) > datetime(2026, 2, 1, tzinfo=UTC)
    # It is in no event store: a replay carries it over from the projections it replaces.
    before = replay_hash(settings)
    assert count_readings(settings) == 1
    assert replay_hash(settings) == before


def dead_letters(bootstrap: str, wait_s: float, want: int) -> list[dict[str, object]]:
    """What okr.readings-dlq.v1 holds: `want` letters, or what arrived within `wait_s`."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(READINGS_DLQ.name, p) for p in range(4)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    dead: list[dict[str, object]] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and len(dead) < want:
        for records in consumer.poll(timeout_ms=200).values():
            dead += [orjson.loads(m.value) for m in records]
    consumer.close()
    return dead


def test_a_direct_reading_that_outruns_its_kpi_definition_is_applied(
    tmp_path: Path, fresh_broker: EmbeddedBroker, unique_group: str
) -> None:
    """An integration creates a KPI, then produces its first reading straight to Kafka: the
    reading reaches the processor before the definition (event store, relay, Kafka). It is
    held, and applied once the definition arrives; nothing goes to the dead-letter topic."""
    settings = Settings(data_dir=tmp_path / "data")
    log = Log()
    kpi = uuid.uuid4()
    log.kpi(kpi, target=1.0, amber=0.9, interval="day", aggregation="sum")
    proc = ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / "p.log")
    proc.start()
    db = projection_db(settings)
    try:
        reading = {
            "kpi_id": str(kpi), "value": 3.5, "observed_at": "2026-02-01T00:00:00Z",
            "org_id": "acme", "reading_id": "first",
        }  # fmt: skip
        producer = KafkaProducer(bootstrap_servers=fresh_broker.bootstrap)
        producer.send(KPI_READINGS.name, key=str(kpi).encode(), value=orjson.dumps(reading))
        producer.flush()
        producer.close()
        time.sleep(3)  # the processor has taken it and found the KPI unknown
        assert count_readings(settings) == 0
        entries = store_events(settings, [e for _, e in log.entries])
        produce(fresh_broker.bootstrap, relay_records(entries), entries[-1][0], 4)
        wait_for_position(db, entries[-1][0], 4, procs=[proc])
        deadline = time.monotonic() + 30
        while count_readings(settings) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count_readings(settings) == 1
        assert dead_letters(fresh_broker.bootstrap, 2, 1) == []
        with db.transaction(write=False) as cur:
            row = cur.execute(
                "SELECT value, reading_id FROM g1_readings WHERE kpi_id = ?", (str(kpi),)
            ).fetchone()
            last = cur.execute(
                "SELECT last_reading_at FROM g1_kpis WHERE kpi_id = ?", (str(kpi),)
            ).fetchone()
    finally:
        proc.stop()
        db.close()
    assert tuple(row) == (3.5, "first")
    assert last[0] == "2026-02-01T00:00:00.000000Z"

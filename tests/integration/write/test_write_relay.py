"""The relay against the real embedded broker: order, crash safety, broker restarts."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

import events
from contracts.topics import GOAL_EVENTS, KPI_READINGS
from services.broker.embedded import EmbeddedBroker
from services.command.decisions import Context
from services.command.service import CommandService
from services.eventstore import EventStore
from services.ingest.service import ReadingsService
from services.kafka.partitioning import partition_of
from services.relay.main import Relay
from services.relay.progress import ProgressStore
from services.settings import Settings
from tests.support import postgres
from tests.support.ports import free_port
from tests.support.processes import wait_for_log

PARTITIONS = Settings.model_fields["kafka_partitions"].default  # the relays' here

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def relay_settings(settings: Settings, bootstrap: str, **extra: Any) -> Settings:
    return settings.model_copy(update={"kafka_bootstrap": bootstrap, **extra})


def seed(store: EventStore, org: str, *, kpis: int = 3, readings: int = 300) -> list[uuid.UUID]:
    """Goal events on a few streams and readings interleaved across KPIs. Returns kpi ids."""
    service = CommandService(store)

    def ctx() -> Context:
        now = datetime.now(UTC)
        return Context(org_id=org, occurred_at=now, recorded_at=now)

    objective_id = uuid.uuid4()
    service.create_objective(
        ctx(),
        objective_id,
        {"title": "O", "owner": "ana", "level": "team", "period": {"start": "2026-01-01",
                                                                    "end": "2026-03-31"}},
    )  # fmt: skip
    kpi_ids = []
    for n in range(kpis):
        kpi_id = uuid.uuid4()
        service.define_kpi(
            ctx(),
            kpi_id,
            {"name": f"K{n}", "direction": "increase", "target": 10.0, "interval": "day",
             "aggregation": "sum"},
        )  # fmt: skip
        kpi_ids.append(kpi_id)
        service.revise_objective(ctx(), objective_id, None, {"title": f"O{n}"})
    ingest = ReadingsService(store)
    for start in range(0, readings, 1000):
        items = [
            {
                "kpi_id": str(kpi_ids[i % kpis]),
                "value": float(i),
                "observed_at": (T0 + timedelta(seconds=i)).isoformat(),
            }
            for i in range(start, min(start + 1000, readings))
        ]
        answer = ingest.accept(org, items)
        assert answer["accepted"] == len(items), answer
    return kpi_ids


def read_topics(bootstrap: str, org: str, until: set[str], timeout_s: float = 30.0) -> dict:
    """Every record of our org on both topics, in offset order per partition, until every
    event id of `until` was seen. Returns {"goal": [...], "readings": [...], "marks": n}."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    tps = [TopicPartition(t, p) for t in (GOAL_EVENTS.name, KPI_READINGS.name) for p in range(4)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    goal: list[tuple[Any, events.Event]] = []
    readings: list[tuple[Any, list[events.Event]]] = []
    marks = 0
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until <= seen:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in batch:
                    headers = dict(record.headers)
                    if headers.get("okr-content") == b"watermark":
                        assert record.key is None
                        assert orjson.loads(record.value)["watermark"] == int(
                            headers["okr-watermark"]
                        )
                        marks += 1
                    elif record.topic == GOAL_EVENTS.name:
                        event = events.decode(record.value)
                        if event.org_id == org:
                            assert record.key == str(event.stream_id).encode()
                            assert headers["okr-event-id"] == str(event.event_id).encode()
                            assert headers["okr-event-type"] == event.type.encode()
                            goal.append((record, event))
                            seen.add(str(event.event_id))
                    else:
                        batch_events = [events.decode_dict(d) for d in orjson.loads(record.value)]
                        if batch_events and batch_events[0].org_id == org:
                            assert headers["okr-content"] == b"reading-batch"
                            ids = headers["okr-event-id"].decode().split(",")
                            assert ids == [str(e.event_id) for e in batch_events]
                            assert record.key is None
                            assert {
                                partition_of(str(e.kpi_id), PARTITIONS) for e in batch_events
                            } == {record.partition}
                            readings.append((record, batch_events))
                            seen.update(ids)
    finally:
        consumer.close()
    return {"goal": goal, "readings": readings, "marks": marks, "seen": seen}


def stored(store: EventStore) -> list[Any]:
    found, after = [], 0
    while batch := store.notifications(after, 10_000):
        found.extend(batch)
        after = batch[-1].position
    return found


def assert_complete_and_ordered(store: EventStore, got: dict) -> None:
    entries = stored(store)
    position = {str(n.decode().event_id): n.position for n in entries}
    assert got["seen"] == set(position), "every stored event is in Kafka"
    # Per goal stream and per KPI, first occurrences (duplicates allowed) come in
    # stream/position order.
    per_key: dict[bytes, list[int]] = defaultdict(list)
    firsts: set[str] = set()
    ordered = sorted(got["goal"], key=lambda p: (p[0].partition, p[0].offset))
    for record, event in ordered:
        if str(event.event_id) not in firsts:
            firsts.add(str(event.event_id))
            per_key[record.key].append(event.stream_version)
    for _, batch in sorted(got["readings"], key=lambda p: (p[0].partition, p[0].offset)):
        for event in batch:
            if str(event.event_id) not in firsts:
                firsts.add(str(event.event_id))
                per_key[str(event.kpi_id).encode()].append(position[str(event.event_id)])
    for key, order in per_key.items():
        assert order == sorted(order), f"key {key!r} out of order"


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    opened = EventStore.from_settings(settings)
    yield opened
    opened.close()


def run_relay_until(relay: Relay, position: int, timeout_s: float = 30.0) -> None:
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while relay.progress.position < position:
            assert time.monotonic() < deadline, f"relay stuck at {relay.progress.position}"
            time.sleep(0.05)
    finally:
        relay.stopping.set()
        thread.join(15)


def test_relay_publishes_every_event_in_stream_order(
    settings: Settings, store: EventStore, broker: EmbeddedBroker
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    config = relay_settings(settings, broker.bootstrap, relay_batch_size=200,
                            relay_readings_per_record=40)  # fmt: skip
    seed(store, org, kpis=3, readings=600)
    progress = ProgressStore.from_settings(config)
    relay = Relay(config, store, progress)
    run_relay_until(relay, store.max_position())
    assert ProgressStore.from_settings(config).load().position == store.max_position()
    got = read_topics(broker.bootstrap, org, {str(n.decode().event_id) for n in stored(store)})
    assert_complete_and_ordered(store, got)
    assert all(len(batch) <= 40 for _, batch in got["readings"])
    assert got["marks"] >= 8  # one per partition of both topics at least
    # Readings of KPIs on one partition travel together: far fewer records than readings.
    assert len(got["readings"]) < 600 / 10


def _relay_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(settings.data_dir),
        "OKR_KAFKA_BOOTSTRAP": bootstrap,
        "OKR_RELAY_BATCH_SIZE": "300",
        "OKR_RELAY_READINGS_PER_RECORD": "50",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("OKR_DATABASE_URL", None)
    if settings.database_url:
        env["OKR_DATABASE_URL"] = settings.database_url
    return env


def test_relay_killed_mid_batch_loses_nothing(
    settings: Settings, store: EventStore, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    seed(store, org, kpis=5, readings=6000)
    end = store.max_position()
    env = _relay_env(settings, broker.bootstrap)
    progress = ProgressStore.from_settings(settings)
    log = (tmp_path / "relay.log").open("wb")
    argv = [sys.executable, "-m", "services.relay.main"]
    first = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while progress.load().position == 0:
            assert time.monotonic() < deadline, "relay never published"
            assert first.poll() is None, "relay exited"
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = progress.load().position
        assert killed_at < end, "the kill came too late to be mid-stream"
        second = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while progress.load().position < end:
            assert time.monotonic() < deadline, "restart stuck"
            assert second.poll() is None, "restarted relay exited"
            time.sleep(0.05)
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, "SIGTERM → flush and exit 0"
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
        log.close()
    got = read_topics(broker.bootstrap, org, {str(n.decode().event_id) for n in stored(store)})
    assert_complete_and_ordered(store, got)


def test_relay_republishes_everything_to_a_restarted_empty_broker(
    settings: Settings, store: EventStore
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    seed(store, org, kpis=2, readings=200)
    broker = EmbeddedBroker(free_port(), partitions=4).start()
    try:
        config = relay_settings(settings, broker.bootstrap)
        relay = Relay(config, store, ProgressStore.from_settings(config))
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while relay.progress.position < store.max_position():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ids = {str(n.decode().event_id) for n in stored(store)}
            assert read_topics(broker.bootstrap, org, ids)["seen"] == ids
            broker.stop()
            broker.start()  # memory storage: empty topics again
            got = read_topics(broker.bootstrap, org, ids, timeout_s=45)
        finally:
            relay.stopping.set()
            thread.join(15)
        assert_complete_and_ordered(store, got)
    finally:
        broker.stop()


def test_relay_rides_out_a_postgresql_outage(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses connections for a while: the relay logs, waits and goes on where
    it was (it used to die on the event store's first OperationalError, its thread gone)."""
    caplog.set_level(logging.WARNING, logger="services.relay.main")
    with postgres.fresh_database() as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url)
        config = relay_settings(settings, broker.bootstrap, relay_poll_interval_s=0.05)
        store = EventStore.from_settings(config)
        try:
            org = f"org-{uuid.uuid4().hex[:8]}"
            seed(store, org, kpis=2, readings=100)
            relay = Relay(config, store, ProgressStore.from_settings(config))
            thread = threading.Thread(target=relay.run, daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 30
                while relay.progress.position < store.max_position():
                    assert time.monotonic() < deadline, "relay never caught up"
                    time.sleep(0.05)
                with postgres.refusing_connections(url):
                    # Until a poll failed (the pool gives up on connecting after a while).
                    deadline = time.monotonic() + 90
                    while thread.is_alive() and not any(
                        "store unavailable" in r.getMessage() for r in caplog.records
                    ):
                        assert time.monotonic() < deadline, "no poll failed"
                        time.sleep(0.1)
                    assert thread.is_alive(), "the relay died with the database"
                seed(store, org, kpis=1, readings=50)
                end = store.max_position()
                deadline = time.monotonic() + 60
                while relay.progress.position < end:
                    assert time.monotonic() < deadline, f"stuck at {relay.progress.position}"
                    assert thread.is_alive(), "the relay died"
                    time.sleep(0.05)
            finally:
                relay.stopping.set()
                thread.join(15)
            seen = {str(n.decode().event_id) for n in stored(store)}
            assert_complete_and_ordered(store, read_topics(broker.bootstrap, org, seen))
        finally:
            store.close()


def test_relay_started_while_postgresql_refuses_waits_for_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """`python -m services.relay.main` with its database refusing connections: it logs and
    waits (exiting would have `okrstream up` restart it until it gives up on the stack),
    then relays once the database is back, and stops on SIGTERM with exit 0."""
    with postgres.fresh_database() as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url)
        store = EventStore.from_settings(settings)
        seed(store, f"org-{uuid.uuid4().hex[:8]}", kpis=1, readings=20)
        end = store.max_position()
        store.close()
        log_path = tmp_path / "relay.log"
        relay: subprocess.Popen[bytes] | None = None
        try:
            with postgres.refusing_connections(url):
                with log_path.open("wb") as log:
                    relay = subprocess.Popen(
                        [sys.executable, "-m", "services.relay.main"],
                        env=_relay_env(settings, broker.bootstrap),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                wait_for_log(log_path, "event store unavailable", relay)
                time.sleep(1)
                assert relay.poll() is None, log_path.read_text()[-2000:]
            progress = None
            deadline = time.monotonic() + 60
            while True:
                assert relay.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "relay never caught up"
                with contextlib.suppress(Exception):
                    progress = progress or ProgressStore.from_settings(settings)
                    if progress.load().position >= end:
                        break
                time.sleep(0.1)
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(20) == 0
        finally:
            if relay is not None and relay.poll() is None:
                relay.kill()

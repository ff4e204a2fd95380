"""Every event type through the real embedded broker with kafka-python, aiokafka and faust."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import events
from contracts.topics import ALL_TOPICS, GOAL_EVENTS, HEADER_EVENT_ID
from services.broker.embedded import EmbeddedBroker
from services.kafka.admin import PartitionMismatchError, ensure_topics, topic_partitions
from services.settings import Settings
from tests.integration.processor.harness import ROOT, processor_env
from tests.support.samples import every_event

pytestmark = pytest.mark.integration


def fresh_topic(broker: EmbeddedBroker, partitions: int = 4) -> str:
    from contracts.topics import TopicSpec

    name = f"test.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, partitions, specs=[TopicSpec(name, "k", "v")])
    return name


def test_contract_topics_exist_with_their_partitions(broker: EmbeddedBroker) -> None:
    known = topic_partitions(broker.bootstrap)
    for spec in ALL_TOPICS:
        assert known[spec.name] == 4
    ensure_topics(broker.bootstrap, 4)  # idempotent
    assert topic_partitions(broker.bootstrap)[GOAL_EVENTS.name] == 4


def test_every_event_type_through_kafka_python(broker: EmbeddedBroker, unique_group: str) -> None:
    topic = fresh_topic(broker)
    sent = every_event()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for e in sent:
        producer.send(
            topic,
            key=str(e.stream_id).encode(),
            value=events.encode(e),
            headers=[(HEADER_EVENT_ID, str(e.event_id).encode())],
        )
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=unique_group,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        max_poll_interval_ms=10000,
        consumer_timeout_ms=15000,
    )
    got: list[events.Event] = []
    try:
        for record in consumer:
            event = events.decode(record.value)
            assert dict(record.headers)[HEADER_EVENT_ID] == str(event.event_id).encode()
            got.append(event)
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert sorted(got, key=lambda e: e.type) == sorted(sent, key=lambda e: e.type)


def test_every_event_type_through_aiokafka(broker: EmbeddedBroker, unique_group: str) -> None:
    topic = fresh_topic(broker)
    sent = every_event()

    async def run() -> list[events.Event]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            for e in sent:
                await producer.send(topic, key=str(e.stream_id).encode(), value=events.encode(e))
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=unique_group,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=10000,
        )
        await consumer.start()
        got: list[events.Event] = []
        try:
            deadline = time.monotonic() + 20
            while len(got) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                got.extend(events.decode(r.value) for rs in batches.values() for r in rs)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert {e.event_id for e in got} == {e.event_id for e in sent}
    assert all(e == next(s for s in sent if s.event_id == e.event_id) for e in got)


def test_two_consumers_in_one_group_split_the_partitions(
    broker: EmbeddedBroker, unique_group: str
) -> None:
    topic = fresh_topic(broker, partitions=4)
    config = {
        "bootstrap_servers": broker.bootstrap,
        "group_id": unique_group,
        "session_timeout_ms": 6000,
        "max_poll_interval_ms": 10000,
        "heartbeat_interval_ms": 1000,
    }
    a = KafkaConsumer(topic, **config)
    b = KafkaConsumer(topic, **config)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            a.poll(200)
            b.poll(200)
            pa, pb = a.assignment(), b.assignment()
            if pa and pb and len(pa | pb) == 4:
                break
        pa, pb = a.assignment(), b.assignment()
        assert pa, f"first member got no partitions: {pb}"
        assert pb, f"second member got no partitions: {pa}"
        assert not (pa & pb)
        assert pa | pb == {TopicPartition(topic, p) for p in range(4)}
    finally:
        a.close()
        b.close()


def test_ensure_topics_refuses_another_partition_count(broker: EmbeddedBroker) -> None:
    from contracts.topics import TopicSpec

    spec = TopicSpec(fresh_topic(broker, partitions=2), "k", "v")
    ensure_topics(broker.bootstrap, 2, specs=[spec])  # the configured count: accepted
    with pytest.raises(PartitionMismatchError, match=f"is 4 but {spec.name} has 2 partitions"):
        ensure_topics(broker.bootstrap, 4, specs=[spec])


def test_processor_refuses_to_start_with_another_partition_count(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The contract topics have 4 partitions; a processor configured for 2 would route KR
    measurements away from their objectives' workers: it exits at once, saying why."""
    settings = Settings(data_dir=tmp_path, kafka_partitions=2)
    env = processor_env(settings, broker.bootstrap, f"g-{uuid.uuid4().hex[:8]}")
    done = subprocess.run(
        [sys.executable, "-m", "services.processor.main"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "OKR_KAFKA_PARTITIONS is 2 but okr.goal-events.v1 has 4" in done.stderr

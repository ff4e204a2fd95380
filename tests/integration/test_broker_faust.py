"""A faust agent in a consumer group receives every event type through the embedded broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import faust
import pytest
from kafka import KafkaProducer

import events
from contracts.topics import TopicSpec
from services.broker.embedded import EmbeddedBroker
from services.kafka.admin import ensure_topics
from tests.support.samples import every_event

pytestmark = pytest.mark.integration


def test_faust_agent_receives_every_event_type(
    broker: EmbeddedBroker, unique_group: str, tmp_path: Path
) -> None:
    topic_name = f"test.faust.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, 2, specs=[TopicSpec(topic_name, "k", "v")])
    sent = every_event()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for e in sent:
        producer.send(topic_name, key=str(e.stream_id).encode(), value=events.encode(e))
    producer.flush()
    producer.close()

    app = faust.App(
        unique_group,
        broker=f"kafka://{broker.bootstrap}",
        datadir=str(tmp_path / "faust"),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_every=100,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw", partitions=2)
    received: list[events.Event] = []
    done = asyncio.Event()

    @app.agent(topic)
    async def collect(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            received.append(events.decode(value))
            if len(received) >= len(sent):
                done.set()

    async def run() -> None:
        worker_task = asyncio.ensure_future(app.start())
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            await app.stop()
            worker_task.cancel()

    asyncio.run(run())
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in sent)
    assert {e.type for e in received} == set(events.EVENT_TYPES)

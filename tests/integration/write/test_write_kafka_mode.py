"""OKR_INGEST_MODE=kafka against the real embedded broker: the records ingest produces are
the relay's records for the same readings (less the okr-position header), and the HTTP
answer comes after the broker's acknowledgement."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from contracts.topics import HEADER_POSITION, KPI_READINGS
from services.auth.tokens import TokenStore
from services.broker.embedded import EmbeddedBroker
from services.command.decisions import Context
from services.command.service import CommandService
from services.eventstore import EventStore
from services.ingest.app import create_app
from services.ingest.kafka_sink import KafkaReadingsSink, KafkaUnavailableError, reading_records
from services.ingest.service import ReadingsService
from services.kafka.partitioning import partition_of
from services.relay.records import to_records
from services.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def define_kpis(store: EventStore, org: str, count: int) -> list[uuid.UUID]:
    """`count` KPIs with the same ids on every run, so they fall on the same partitions."""
    service = CommandService(store)
    ids = []
    for n in range(count):
        kpi_id = uuid.uuid5(uuid.NAMESPACE_URL, f"okrstream-test:kafka-mode-kpi-{n}")
        service.define_kpi(
            Context(org_id=org, occurred_at=NOW, recorded_at=NOW),
            kpi_id,
            {"name": f"K{n}", "direction": "increase", "target": 10.0, "interval": "day",
             "aggregation": "sum"},
        )  # fmt: skip
        ids.append(kpi_id)
    return ids


def items_for(kpis: list[uuid.UUID], count: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {
            "kpi_id": str(kpis[i % len(kpis)]),
            "value": float(i % 17),
            "observed_at": (T0 + timedelta(seconds=i)).isoformat(),
            **({"reading_id": f"r-{i}"} if i % 2 else {"source": "crm"}),
        }
        for i in range(count)
    ]
    items.append(dict(items[3]))  # an in-batch repeat
    items.append({**items[0], "value": float("inf")})  # rejected
    items.append({**items[0], "kpi_id": str(uuid.uuid4())})  # unknown KPI
    return items


def consume(bootstrap: str, org: str, expected: int, timeout_s: float = 30.0) -> list:
    """The records of okr.kpi-readings.v1 carrying readings of `org`, per partition in offset
    order."""
    mark = f'"org_id":"{org}"'.encode()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    tps = [TopicPartition(KPI_READINGS.name, p) for p in range(4)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < expected:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                found.extend(r for r in batch if mark in r.value)
    finally:
        consumer.close()
    return sorted(found, key=lambda r: (r.partition, r.offset))


def per_partition(records: list[tuple[int, bytes, list[tuple[str, bytes]]]]) -> dict:
    out: dict[int, list[tuple[bytes, list[tuple[str, bytes]]]]] = {}
    for partition, value, headers in records:
        out.setdefault(partition, []).append((value, headers))
    return out


def test_kafka_mode_publishes_what_the_relay_would(broker: EmbeddedBroker, tmp_path: Path) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "data", kafka_bootstrap=broker.bootstrap)
    store = EventStore.from_settings(settings)
    sink = KafkaReadingsSink(settings)
    try:
        kpis = define_kpis(store, org, 5)  # on two partitions
        items = items_for(kpis, 1_300)
        clock = lambda: NOW  # noqa: E731 - the same recorded_at on both paths
        direct = ReadingsService(store, sink, readings_per_record=500, clock=clock)
        before = store.max_position()
        kafka_answer = direct.accept(org, items)
        assert store.max_position() == before, "kafka mode writes no readings to the store"

        via_store = ReadingsService(store, readings_per_record=500, clock=clock)
        store_answer = via_store.accept(org, items)
        assert {**kafka_answer, "position": 0} == {**store_answer, "position": 0}
        assert kafka_answer["accepted"] == 1_300
        assert kafka_answer["duplicates"] == 1
        assert [r["index"] for r in kafka_answer["rejected"]] == [1_301, 1_302]

        entries = [n for n in store.notifications(before, 10_000)]
        relay_records, _ = to_records(entries, 500, settings.kafka_partitions)
        expected = [
            (r.partition, r.value, [h for h in r.headers if h[0] != HEADER_POSITION])
            for r in relay_records
            if r.topic == KPI_READINGS.name
        ]
        assert len({p for p, _, _ in expected}) > 1, "the KPIs span several partitions"
        got = consume(broker.bootstrap, org, len(expected))
        assert per_partition([(r.partition, r.value, list(r.headers)) for r in got]) == (
            per_partition(expected)
        )
        assert all(r.key is None and HEADER_POSITION not in dict(r.headers) for r in got)
        # Tansu refuses kafka-python's idempotent produce: the sink fell back to acks=all
        # with one request in flight, and said so in the log.
        assert sink.idempotent is False
    finally:
        sink.close()
        store.close()


def test_kafka_mode_over_http_answers_after_the_ack(broker: EmbeddedBroker, tmp_path: Path) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data", kafka_bootstrap=broker.bootstrap, ingest_mode="kafka"
    )
    store = EventStore.from_settings(settings)
    (kpi,) = define_kpis(store, org, 1)
    store.close()
    tokens = TokenStore.from_settings(settings)
    token = tokens.create(org, ["ingest"])
    tokens.close()
    body = {
        "readings": [
            {
                "kpi_id": str(kpi),
                "value": 1.0,
                "observed_at": (T0 + timedelta(minutes=i)).isoformat(),
            }
            for i in range(10)
        ]
    }
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/readings", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == 10
        (record,) = consume(broker.bootstrap, org, 1)
    assert record.value.count(b'"type":"reading.recorded"') == 10
    assert record.partition == partition_of(str(kpi), settings.kafka_partitions)


def test_kafka_mode_refuses_a_readings_topic_of_another_partition_count(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Records go to partitions computed from OKR_KAFKA_PARTITIONS: with a topic of another
    count a KPI's readings would leave its partition, so nothing is sent (a 503 over HTTP)."""
    settings = Settings(
        data_dir=tmp_path / "data", kafka_bootstrap=broker.bootstrap, kafka_partitions=8
    )
    sink = KafkaReadingsSink(settings)
    try:
        records = reading_records([str(uuid.uuid4())], [b'{"event_id":"e"}'], 100, 8)
        with pytest.raises(KafkaUnavailableError, match=r"has 4 partitions.*says 8"):
            sink.send(records)
    finally:
        sink.close()

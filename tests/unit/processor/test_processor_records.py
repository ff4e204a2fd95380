"""The processor's internal wire format: measurement bundles and their partitioning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from services.processor.records import (
    Notice,
    decode_measurement,
    encode_measure_watermark,
    encode_measurements,
    partition_of,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)

notices = st.lists(
    st.builds(
        Notice,
        objective_id=st.uuids().map(str),
        event_id=st.sampled_from([str(uuid4()) for _ in range(3)]),
        occurred_at=st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s)),
        recorded_at=st.integers(0, 10**6).map(lambda s: T0 + timedelta(microseconds=s)),
    ),
    max_size=40,
)


@given(notices)
def test_a_bundle_decodes_to_its_notices(found: list[Notice]) -> None:
    assert decode_measurement(encode_measurements(found)) == found


def test_a_forwarded_watermark_decodes_to_position_and_source() -> None:
    assert decode_measurement(encode_measure_watermark(1234, 3)) == (1234, 3)


@given(st.uuids().map(str), st.integers(1, 64))
def test_partition_of_is_where_the_relay_s_producer_puts_the_key(key: str, n: int) -> None:
    """Measurements go to the partition the objective's goal events are on: kafka-python's
    default partitioner, which the relay's producer uses for keyed records."""
    partitions = list(range(n))
    assert partition_of(key, n) == DefaultPartitioner()(key.encode(), partitions, partitions)

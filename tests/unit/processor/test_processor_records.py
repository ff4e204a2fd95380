"""The processor's internal wire format: measurement bundles and their partitioning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import orjson
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from services.kafka.partitioning import partition_of
from services.processor.records import (
    Cause,
    Notice,
    encode_measure_watermark,
    encode_measurements,
    fold_measurement,
    keep_latest,
    notices_of,
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


def test_a_forwarded_watermark_decodes_to_position_and_source() -> None:
    latest: dict[str, Cause] = {}
    assert fold_measurement(encode_measure_watermark(1234, 3), latest) == (1234, 3)
    assert latest == {}


@given(st.lists(notices, max_size=5))
def test_folding_bundles_keeps_each_objective_s_latest_notice(bundles: list[list[Notice]]) -> None:
    """What the objective agent does with a take of bundles: the latest notice per
    objective, as keep_latest over every decoded notice gives it."""
    latest: dict[str, Cause] = {}
    expected: dict[str, Notice] = {}
    for bundle in bundles:
        assert fold_measurement(encode_measurements(bundle), latest) is None
        for n in bundle:
            keep_latest(expected, n.objective_id, n)
    assert notices_of(latest) == expected


def test_folding_keeps_the_first_of_two_notices_tied_on_time_and_event() -> None:
    first = Notice("o", "e", T0, T0)
    other = Notice("o", "e", T0, T0 + timedelta(microseconds=5))
    latest: dict[str, Cause] = {}
    for n in (first, other):
        fold_measurement(encode_measurements([n]), latest)
    assert notices_of(latest) == {"o": first}


def test_bundles_are_deflated_and_plain_json_ones_still_decode() -> None:
    """Bundles go out deflated (about half the bytes of their JSON); one written as plain
    JSON (before they were deflated, still in the topic after an upgrade) decodes too."""
    found = [Notice(str(uuid4()), str(uuid4()), T0, T0) for _ in range(500)]
    deflated = encode_measurements(found)
    causes = [(n.event_id, T0.isoformat(), T0.isoformat()) for n in found]
    plain = orjson.dumps(
        {"causes": causes, "objectives": [(n.objective_id, i) for i, n in enumerate(found)]}
    )
    assert len(deflated) < 0.7 * len(plain)
    from_deflated: dict[str, Cause] = {}
    from_plain: dict[str, Cause] = {}
    fold_measurement(deflated, from_deflated)
    fold_measurement(plain, from_plain)
    assert notices_of(from_deflated) == notices_of(from_plain) == {n.objective_id: n for n in found}


@given(st.uuids().map(str), st.integers(1, 64))
def test_partition_of_is_where_the_relay_s_producer_puts_the_key(key: str, n: int) -> None:
    """Measurements go to the partition the objective's goal events are on: kafka-python's
    default partitioner, which the relay's producer uses for keyed records."""
    partitions = list(range(n))
    assert partition_of(key, n) == DefaultPartitioner()(key.encode(), partitions, partitions)

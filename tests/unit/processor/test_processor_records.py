"""The processor's wire formats: reading batches (and their dead letters), measurement
bundles and their partitioning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

import orjson
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

import events
from contracts.topics import CONTENT_READING_BATCH, HEADER_CONTENT, HEADER_POSITION, KPI_READINGS
from services.kafka.partitioning import partition_of
from services.processor.app import parse_kpi_records
from services.processor.records import (
    Cause,
    Notice,
    encode_measure_watermark,
    encode_measurements,
    fold_measurement,
    keep_latest,
    notices_of,
)
from tests.unit.processor.builders import Log

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NO_LOOKUPS = SimpleNamespace()  # a projector without kpi_org_state: relay batches need none

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


def test_a_bad_entry_of_a_reading_batch_goes_alone_to_the_dead_letters() -> None:
    """A relay record packs the readings of a partition's KPIs: one defective entry is
    dead-lettered with its index and reason, the others are applied."""
    log = Log()
    a, b = uuid4(), uuid4()
    good = [log.reading(k, 1.5, T0, f"r{i}") for i, k in enumerate((a, b, a))]
    entries = [orjson.loads(events.encode(e)) for e in good]
    entries.insert(1, {**entries[0], "value": "x"})
    entries.insert(3, ["not", "an", "event"])
    message = SimpleNamespace(
        topic=KPI_READINGS.name, partition=2, offset=41, key=None,
        value=orjson.dumps(entries),
        headers=[(HEADER_CONTENT, CONTENT_READING_BATCH.encode()), (HEADER_POSITION, b"9")],
    )  # fmt: skip
    batch = parse_kpi_records(NO_LOOKUPS, [SimpleNamespace(message=message)])  # type: ignore[arg-type]
    assert [(r.kpi_id, r.reading_id, r.position) for r in batch.rows] == [
        (str(a), "r0", 9),
        (str(b), "r1", 9),
        (str(a), "r2", 9),
    ]
    assert [(d.partition, d.offset, d.key) for d in batch.dead] == [(2, 41, None)] * 2
    assert batch.dead[0].reason.startswith("entry 1 of a reading batch: ValueError")
    assert orjson.loads(batch.dead[0].value or b"") == entries[1]
    assert batch.dead[1].reason.startswith("entry 3 of a reading batch: AttributeError")
    assert orjson.loads(batch.dead[1].value or b"") == ["not", "an", "event"]


def test_a_forged_reading_batch_is_held_to_ingest_s_stateless_rules() -> None:
    """Any producer of the topic can set the relay's batch header: entries ingest would
    refuse (a value that is not a JSON number or out of bounds, a NUL, which PostgreSQL
    cannot store) are dead-lettered, each alone, instead of stored."""
    log = Log()
    kpi = uuid4()
    entry = orjson.loads(events.encode(log.reading(kpi, 1.5, T0, "ok")))
    forged = [
        {**entry, "value": "5"},
        {**entry, "value": True},
        {**entry, "value": 1e300},
        {**entry, "reading_id": "nul\x00here"},
        {**entry, "org_id": "victim\x00"},
    ]
    message = SimpleNamespace(
        topic=KPI_READINGS.name, partition=1, offset=3, key=None,
        value=orjson.dumps([entry, *forged]),
        headers=[(HEADER_CONTENT, CONTENT_READING_BATCH.encode())],
    )  # fmt: skip
    batch = parse_kpi_records(NO_LOOKUPS, [SimpleNamespace(message=message)])  # type: ignore[arg-type]
    assert [r.reading_id for r in batch.rows] == ["ok"]
    reasons = [d.reason for d in batch.dead]
    assert [r.split(":")[0] for r in reasons] == [
        f"entry {i} of a reading batch" for i in range(1, 6)
    ]
    assert all("JSON number" in r for r in reasons[:2])
    assert "within" in reasons[2]
    assert all("NUL" in r for r in reasons[3:])


def test_a_reading_batch_that_is_not_an_array_goes_whole_to_the_dead_letters() -> None:
    message = SimpleNamespace(
        topic=KPI_READINGS.name, partition=0, offset=7, key=None, value=b'{"a": 1}',
        headers=[(HEADER_CONTENT, CONTENT_READING_BATCH.encode())],
    )  # fmt: skip
    batch = parse_kpi_records(NO_LOOKUPS, [SimpleNamespace(message=message)])  # type: ignore[arg-type]
    assert batch.rows == []
    assert [(d.reason, d.value) for d in batch.dead] == [
        ("a reading batch must be a JSON array", b'{"a": 1}')
    ]

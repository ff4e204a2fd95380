"""The ingest hot path gives exactly the answers of the pydantic contract it short-cuts."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events
from contracts.readings import dashed, reading_stream_hex, reading_stream_id, url_uuid5_hex
from services.ingest.kpis import KpiFacts
from services.ingest.readings import judge, parse, validate_one

KPI = "6d1f0c54-8c8a-4bd9-9d36-6f1c2a9b4f10"
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def slow(item: Any) -> Any:
    reading = validate_one(item)
    if isinstance(reading, str):
        return reading
    return (reading.kpi_id, reading.value, reading.observed_at, reading.reading_id, reading.source)


def same(item: Any) -> None:
    fast = parse([item])[0]
    expected = slow(item)
    assert fast == expected
    if not isinstance(fast, str):
        assert type(fast[1]) is float
        assert fast[2].tzinfo is not None
        assert fast[2].utcoffset().total_seconds() == 0


BASE = {"kpi_id": KPI, "value": 1.5, "observed_at": "2026-01-02T03:04:05Z"}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"kpi_id": KPI.upper()},
        {"kpi_id": KPI.replace("-", "")},
        {"kpi_id": "{" + KPI + "}"},
        {"kpi_id": "urn:uuid:" + KPI},
        {"kpi_id": "not-a-uuid"},
        {"kpi_id": 5},
        {"kpi_id": None},
        {"value": 3},
        {"value": -0.0},
        {"value": True},
        {"value": "1.5"},
        {"value": "nan"},
        {"value": float("inf")},
        {"value": float("nan")},
        {"value": 2**60},
        {"value": 10**400},
        {"value": None},
        {"value": False},
        {"value": "5"},
        {"value": 1e15},
        {"value": -1e15},
        {"value": 10**15},
        {"value": -(10**15) - 1},
        {"value": 1.0000000000000002e15},
        {"value": -1e16},
        {"value": 1.7e308},
        {"value": 5e-324},
        {"observed_at": "2026-01-02T03:04:05+02:00"},
        {"observed_at": "2026-01-02T03:04:05-07:30"},
        {"observed_at": "2026-01-02T03:04:05.1Z"},
        {"observed_at": "2026-01-02T03:04:05.12Z"},
        {"observed_at": "2026-01-02T03:04:05.1234Z"},
        {"observed_at": "2026-01-02T03:04:05.123456+00:00"},
        {"observed_at": "2026-01-02T03:04:05.1234567Z"},
        {"observed_at": "2026-01-02T03:04:05"},
        {"observed_at": "2026-01-02 03:04:05Z"},
        {"observed_at": "2026-01-02t03:04:05z"},
        {"observed_at": "2026-13-02T03:04:05Z"},
        {"observed_at": "2026-02-30T03:04:05Z"},
        {"observed_at": "2026-01-02T24:00:00Z"},
        {"observed_at": "2026-01-02T23:59:60Z"},
        {"observed_at": "2026-01-02T03:04:05+24:00"},
        {"observed_at": "2026-01-02T03:04:05+23:59"},
        {"observed_at": "2026-01-02T03:04:05+00:60"},
        {"observed_at": "0000-01-02T03:04:05Z"},
        {"observed_at": "0001-01-01T00:00:00+01:00"},  # no UTC equivalent (before year 1)
        {"observed_at": "0001-01-01T00:59:59+01:00"},
        {"observed_at": "0001-01-01T01:00:00+01:00"},
        {"observed_at": "9999-12-31T23:59:59-01:00"},  # nor after year 9999
        {"observed_at": "9999-12-31T22:59:59.999999-01:00"},
        {"observed_at": "2026-01-02"},
        {"observed_at": 1767323045},
        {"observed_at": "٢٠٢٦-01-02T03:04:05Z"},
        {"reading_id": None},
        {"reading_id": ""},
        {"reading_id": "r" * 200},
        {"reading_id": "r" * 201},
        {"reading_id": 7},
        {"reading_id": "ü" * 200},
        {"source": None},
        {"source": ""},
        {"source": "s" * 200},
        {"source": "s" * 201},
        {"source": ["crm"]},
        {"extra": 1},
    ],
)
def test_fast_path_answers_like_readingin(change: dict[str, Any]) -> None:
    same({**BASE, **change})


@pytest.mark.parametrize(
    "item", ["text", 1, None, [], [BASE], {"value": 1.0, "observed_at": "2026-01-02T03:04:05Z"}]
)
def test_non_objects_and_missing_fields_answer_like_readingin(item: Any) -> None:
    same(item)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=5)),
    observed=st.one_of(
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.text(alphabet="0123456789-:T.Z+ ", max_size=32),
    ),
    reading_id=st.one_of(st.none(), st.text(max_size=205)),
    source=st.one_of(st.none(), st.text(max_size=205)),
)
def test_fast_path_property(value: Any, observed: str, reading_id: Any, source: Any) -> None:
    item: dict[str, Any] = {"kpi_id": KPI, "value": value, "observed_at": observed}
    if reading_id is not None:
        item["reading_id"] = reading_id
    item["source"] = source
    same(item)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.floats(min_value=-2e15, max_value=2e15),
        st.integers(min_value=-(2 * 10**15), max_value=2 * 10**15),
        st.sampled_from([True, False, "1", "1e3", " 2 ", 1.7e308, -1.7e308]),
    ),
    at=st.one_of(
        st.datetimes(max_value=datetime(1, 1, 2)), st.datetimes(min_value=datetime(9999, 12, 30))
    ),
    offset=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
def test_fast_path_property_at_the_limits(value: Any, at: datetime, offset: int) -> None:
    """Values around ±1e15 and non-numbers, times whose offset reaches past year 1 or 9999:
    both paths give the same answer, and neither raises."""
    sign, minutes = ("-" if offset < 0 else "+"), abs(offset)
    observed = (
        f"{at.year:04d}{at.strftime('-%m-%dT%H:%M:%S')}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    )
    same({"kpi_id": KPI, "value": value, "observed_at": observed})


def test_a_reading_out_of_range_is_rejected_alone() -> None:
    """One bad reading does not lose the batch: before, an observed_at without a UTC
    equivalent raised OverflowError out of the fast path (a 500 for the whole batch), and
    non-numbers and huge numbers were accepted."""
    kpi = uuid.UUID(KPI)
    items = [
        BASE,
        {**BASE, "observed_at": "0001-01-01T00:00:00+01:00"},
        {**BASE, "observed_at": "9999-12-31T23:59:59-01:00"},
        {**BASE, "value": True},
        {**BASE, "value": "5"},
        {**BASE, "value": 1e16},
        {**BASE, "value": -1.7e308},
        {**BASE, "value": 2},
    ]
    judged = judge("acme", items, {kpi: KpiFacts("acme", False, 1)}.get, NOW)
    assert len(judged.rows) == 2
    errors = {r["index"]: r["error"] for r in judged.rejected}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1].startswith("observed_at: ")
    assert "0001-01-01T00:00:00Z" in errors[1]
    assert errors[3] == errors[4] == "value: Input should be a valid number"
    assert "between -1e15 and 1e15" in errors[5]
    assert [events.decode(row[3]).value for row in judged.rows] == [1.5, 2.0]


@settings(max_examples=300, deadline=None)
@given(
    org=st.text(max_size=40),
    reading_id=st.text(min_size=1, max_size=60),
    kpi=st.uuids(),
)
def test_stream_ids_are_the_uuid5_values(org: str, reading_id: str, kpi: uuid.UUID) -> None:
    name = f"okrstream:reading:{org}:{kpi}:{reading_id}"
    try:
        expected = uuid.uuid5(uuid.NAMESPACE_URL, name)
    except UnicodeEncodeError:
        return
    assert reading_stream_id(org, kpi, reading_id) == expected
    assert reading_stream_hex(org, str(kpi).upper(), reading_id) == expected.hex
    assert url_uuid5_hex(name) == expected.hex  # also the processor's detection ids
    assert dashed(expected.hex) == str(expected)


def test_judged_rows_are_the_sealed_pydantic_events() -> None:
    kpi = uuid.UUID(KPI)
    items = [
        {**BASE, "reading_id": "r-1", "source": 'ünï"code'},
        {**BASE, "value": 7, "observed_at": "2026-01-02T03:04:05.5-07:30"},
        {**BASE, "observed_at": "2026-01-02t03:04:05+01:00"},  # the pydantic path
    ]
    judged = judge("acme", items, {kpi: KpiFacts("acme", False, 1)}.get, NOW, actor="ingest")
    assert not judged.rejected
    for row, item in zip(judged.rows, items, strict=True):
        decoded = events.decode(row[3])
        assert isinstance(decoded, events.ReadingRecorded)
        assert decoded.stream_id.hex == row[0]
        assert decoded.event_id == decoded.stream_id
        reading = validate_one(item)
        assert not isinstance(reading, str)
        assert decoded.value == reading.value
        assert decoded.observed_at == reading.observed_at
        rebuilt = events.seal(decoded.model_copy(update={"hash": None, "prev_hash": None}), None)
        assert events.encode(rebuilt) == row[3]
        assert events.verify_chain([decoded]) is None


def test_unicode_digits_never_take_the_fast_path() -> None:
    assert all(c in string.printable for c in "0123456789")
    same({**BASE, "observed_at": "２０２６-01-02T03:04:05Z"})

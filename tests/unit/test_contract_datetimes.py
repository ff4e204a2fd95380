"""Datetimes in requests are RFC 3339 text with an offset: no naive times, no Unix numbers,
none without a UTC equivalent. Period dates are YYYY-MM-DD text within a sane range."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.http import ObjectiveCreate, ObjectiveUpdate
from contracts.readings import KafkaReading, ReadingIn

PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}


@pytest.mark.parametrize("bad", [12, 1_767_225_600.5, "2026-01-01T00:00:00", "yesterday"])
def test_reading_observed_at_must_be_rfc3339_with_offset(bad: object) -> None:
    with pytest.raises(ValidationError):
        ReadingIn.model_validate({"kpi_id": str(uuid.uuid4()), "value": 1, "observed_at": bad})


def test_reading_observed_at_is_normalised_to_utc() -> None:
    r = ReadingIn.model_validate(
        {"kpi_id": str(uuid.uuid4()), "value": 1, "observed_at": "2026-01-01T02:00:00+02:00"}
    )
    assert r.observed_at.isoformat() == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize("bad", [0, "2026-01-01T00:00:00"])
def test_command_occurred_at_must_be_rfc3339_with_offset(bad: object) -> None:
    body = {"title": "t", "owner": "o", "level": "team", "period": PERIOD, "occurred_at": bad}
    with pytest.raises(ValidationError):
        ObjectiveCreate.model_validate(body)


# A time near year 1 or 9999 with an offset has no UTC equivalent: astimezone raises
# OverflowError, which pydantic lets through (a 500, and a whole readings batch lost).
OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+00:45",
                "9999-12-31T23:59:59-01:00", "9999-12-31T23:00:00.5-23:59"]  # fmt: skip


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_times_without_a_utc_equivalent_are_validation_errors(bad: str) -> None:
    reading = {"kpi_id": str(uuid.uuid4()), "value": 1, "observed_at": bad}
    with pytest.raises(ValidationError, match="must lie between 0001-01-01T00:00:00Z"):
        ReadingIn.model_validate(reading)
    with pytest.raises(ValidationError, match="must lie between 0001-01-01T00:00:00Z"):
        KafkaReading.model_validate_json(json.dumps({**reading, "org_id": "acme"}))
    body = {"title": "t", "owner": "o", "level": "team", "period": PERIOD, "occurred_at": bad}
    with pytest.raises(ValidationError, match="must lie between 0001-01-01T00:00:00Z"):
        ObjectiveCreate.model_validate(body)


EDGE_TIMES = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 3)),
    st.datetimes(min_value=datetime(9999, 12, 29)),
    st.datetimes(),
)
OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=400, deadline=None)
@given(at=EDGE_TIMES, offset=OFFSETS)
def test_any_rfc3339_text_validates_to_utc_or_is_a_validation_error(
    at: datetime, offset: timezone
) -> None:
    text = at.replace(tzinfo=offset).isoformat()
    try:
        reading = ReadingIn.model_validate(
            {"kpi_id": str(uuid.uuid4()), "value": 1, "observed_at": text}
        )
    except ValidationError:
        return
    assert reading.observed_at.utcoffset() == timedelta(0)
    assert reading.observed_at == at.replace(tzinfo=offset)


# -- period dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "period",
    [
        {"start": "9999-12-31", "end": "9999-12-31"},  # its end + 1 day cannot be computed
        {"start": "2026-01-01", "end": "9999-12-31"},
        {"start": "0001-01-01", "end": "2026-03-31"},
        {"start": "1899-12-31", "end": "2026-03-31"},
        {"start": "2026-01-01", "end": "3000-01-01"},
        {"start": 0, "end": "2026-03-31"},  # not a Unix time either
        {"start": "2026-01-01", "end": 1_774_915_200},
    ],
)
def test_period_dates_outside_the_sane_range_are_refused(period: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        ObjectiveCreate.model_validate(
            {"title": "t", "owner": "o", "level": "team", "period": period}
        )
    assert all(e["loc"][0] == "period" for e in caught.value.errors())
    with pytest.raises(ValidationError):
        ObjectiveUpdate.model_validate({"period": period})


def test_period_dates_at_the_range_limits_are_accepted() -> None:
    body = {"title": "t", "owner": "o", "level": "team",
            "period": {"start": "1900-01-01", "end": "2999-12-31"}}  # fmt: skip
    period = ObjectiveCreate.model_validate(body).period
    assert (period.start, period.end) == (date(1900, 1, 1), date(2999, 12, 31))

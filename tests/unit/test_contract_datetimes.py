"""Datetimes in requests are RFC 3339 text with an offset: no naive times, no Unix numbers."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from contracts.http import ObjectiveCreate
from contracts.readings import ReadingIn

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

"""Events: stable names, JSON round-trip, upcasting, validation."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid4

import orjson
import pytest
from pydantic import ValidationError

import events
from tests.support.samples import PAYLOADS, T0, every_event, sample


def test_every_event_type_has_a_sample_and_a_dotted_stable_name() -> None:
    assert set(PAYLOADS) == set(events.EVENT_TYPES)
    for name, cls in events.EVENT_TYPES.items():
        assert "." in name
        assert cls.__module__ not in name  # never the Python path


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e.type)
def test_round_trip_through_json(event: events.Event) -> None:
    raw = events.encode(event)
    back = events.decode(raw)
    assert back == event
    assert type(back) is type(event)
    assert events.encode(back) == raw


def test_encoding_is_canonical_sorted_and_compact() -> None:
    raw = events.encode(sample("objective.drafted"))
    data = orjson.loads(raw)
    assert list(data) == sorted(data)
    assert b", " not in raw
    assert b": " not in raw


def test_offsets_are_normalised_to_utc() -> None:
    e = sample("objective.revised", occurred_at=datetime.fromisoformat("2026-01-15T11:30:00+02:00"))
    assert e.occurred_at == T0
    assert b'"occurred_at":"2026-01-15T09:30:00Z"' in events.encode(e)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError):
        sample("objective.revised", occurred_at=datetime(2026, 1, 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValidationError):
        sample("reading.recorded", value=bad)


def test_unknown_fields_are_rejected() -> None:
    data = events.to_json_dict(sample("objective.reopened"))
    data["surprise"] = 1
    with pytest.raises(events.EventDecodeError):
        events.decode_dict(data)


def test_unknown_type_is_a_decode_error() -> None:
    data = events.to_json_dict(sample("objective.reopened"))
    data["type"] = "objective.vanished"
    with pytest.raises(events.EventDecodeError, match="unknown event type"):
        events.decode_dict(data)


def test_period_start_after_end_is_rejected() -> None:
    with pytest.raises(ValidationError):
        sample("objective.rescheduled", period={"start": "2026-02-01", "end": "2026-01-31"})


def test_upcasting_checked_in_v1_percent_confidence_to_share() -> None:
    current = events.to_json_dict(sample("key_result.checked_in"))
    v1 = {**current, "schema_version": 1, "confidence": 70}
    event = events.decode_dict(v1)
    assert isinstance(event, events.KeyResultCheckedIn)
    assert event.schema_version == 2
    assert event.confidence == pytest.approx(0.7)
    assert events.decode_dict(current).confidence == pytest.approx(0.7)


def test_old_alias_decodes_to_the_current_class() -> None:
    data = {**events.to_json_dict(sample("key_result.checked_in")), "type": "key_result.check_in"}
    event = events.decode_dict(data)
    assert isinstance(event, events.KeyResultCheckedIn)
    assert event.type == "key_result.checked_in"


def test_newer_schema_version_than_the_code_is_refused() -> None:
    data = {**events.to_json_dict(sample("objective.reopened")), "schema_version": 9}
    with pytest.raises(events.EventDecodeError, match="newer"):
        events.decode_dict(data)


def test_events_are_frozen() -> None:
    e = sample("objective.reopened")
    with pytest.raises(ValidationError):
        e.stream_version = 2  # type: ignore[misc]


def test_goal_event_classes_exclude_readings_and_detections() -> None:
    names = {c.type_name() for c in events.GOAL_EVENT_CLASSES}
    assert "reading.recorded" not in names
    assert not any(n.startswith("detection.") for n in names)
    assert {"objective.drafted", "kpi.defined", "key_result.added"} <= names


def test_event_ids_are_distinct_per_sample() -> None:
    assert sample("objective.reopened").event_id != sample("objective.reopened").event_id
    assert uuid4() != uuid4()

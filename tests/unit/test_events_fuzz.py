"""Hostile input: event decoders and the readings contract never fail other than cleanly."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import events
from contracts.readings import KafkaReading, ReadingIn
from tests.support.samples import sample

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(raw=st.binary(max_size=400))
def test_binary_garbage_is_a_decode_error(raw: bytes) -> None:
    try:
        events.decode(raw)
    except events.EventDecodeError:
        return
    raise AssertionError("garbage decoded as an event")  # pragma: no cover


@given(value=json_values)
def test_any_json_is_an_event_or_a_decode_error(value: Any) -> None:
    try:
        decoded = events.decode(json.dumps(value).encode())
    except events.EventDecodeError:
        return
    assert isinstance(decoded, events.Event)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(events.EVENT_TYPES)),
    field=st.text(min_size=1, max_size=15),
    value=json_values,
)
def test_mutating_any_field_of_a_valid_event_never_crashes(
    name: str, field: str, value: Any
) -> None:
    data = events.to_json_dict(sample(name))
    keys = sorted(data)
    target = keys[hash(field) % len(keys)] if field not in data else field
    data[target] = value
    try:
        decoded = events.decode_dict(data)
    except events.EventDecodeError:
        return
    assert decoded.type == events.resolve_type(str(data["type"])).type_name()


@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "kpi_id": json_values | st.uuids().map(str),
            "value": json_values | st.sampled_from(["NaN", "Infinity", 1e308]),
            "observed_at": json_values
            | st.sampled_from(["2026-01-01T00:00:00", "2026-01-01T00:00:00Z"]),
            "reading_id": json_values,
            "source": json_values,
            "org_id": json_values,
            "extra": json_values,
        },
    )
)
def test_readings_contract_validates_or_rejects_cleanly(payload: dict[str, Any]) -> None:
    for model in (ReadingIn, KafkaReading):
        try:
            reading = model.model_validate_json(json.dumps(payload))
        except ValidationError:
            continue
        assert reading.observed_at.tzinfo is not None
        assert reading.value == reading.value  # not NaN
        assert abs(reading.value) != float("inf")

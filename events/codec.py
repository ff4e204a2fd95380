"""Encoding and decoding of events: stable type names, canonical JSON, upcasting.

The stored and wire form of an event is its canonical JSON (sorted keys, no whitespace,
UTF-8, datetimes in UTC). Decoding looks the class up by its stable `type` name (old names
through ALIASES), upgrades older `schema_version`s through the class's upcasters, then
validates.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from events.detections import DetectionRaised, DetectionResolved
from events.envelope import Event
from events.goals import (
    KeyResultAdded,
    KeyResultCheckedIn,
    KeyResultPromoted,
    KeyResultRemoved,
    KeyResultRetargeted,
    KeyResultRevised,
    KeyResultReweighted,
    ObjectiveArchived,
    ObjectiveClosed,
    ObjectiveDrafted,
    ObjectiveRealigned,
    ObjectiveReopened,
    ObjectiveRescheduled,
    ObjectiveRevised,
)
from events.kpis import KpiDefined, KpiRetargeted, KpiRetired, KpiRevised, ReadingRecorded

GOAL_EVENT_CLASSES: tuple[type[Event], ...] = (
    ObjectiveDrafted,
    ObjectiveRevised,
    ObjectiveRealigned,
    ObjectiveRescheduled,
    ObjectiveClosed,
    ObjectiveReopened,
    ObjectiveArchived,
    KeyResultAdded,
    KeyResultRevised,
    KeyResultRetargeted,
    KeyResultReweighted,
    KeyResultRemoved,
    KeyResultCheckedIn,
    KeyResultPromoted,
    KpiDefined,
    KpiRevised,
    KpiRetargeted,
    KpiRetired,
)
"""Events of objective and KPI streams: they travel on the goal-events topic."""

EVENT_CLASSES: tuple[type[Event], ...] = (
    *GOAL_EVENT_CLASSES,
    ReadingRecorded,
    DetectionRaised,
    DetectionResolved,
)

EVENT_TYPES: dict[str, type[Event]] = {cls.type_name(): cls for cls in EVENT_CLASSES}
"""Stable type name → class. A stored name never changes."""

ALIASES: dict[str, str] = {
    # Names used before the v1 contract; kept so that old stored events still decode.
    "key_result.check_in": "key_result.checked_in",
}


class EventDecodeError(ValueError):
    """The bytes are not a valid event of a known type."""


def resolve_type(name: str) -> type[Event]:
    """The event class stored under `name` (or one of its aliases)."""
    cls = EVENT_TYPES.get(ALIASES.get(name, name))
    if cls is None:
        raise EventDecodeError(f"unknown event type {name!r}")
    return cls


def to_json_dict(event: Event) -> dict[str, Any]:
    """The event as a JSON-compatible dict (UTC datetimes, string UUIDs)."""
    return event.model_dump(mode="json")


def encode(event: Event) -> bytes:
    """Canonical JSON bytes of the event: sorted keys, compact, UTF-8."""
    return orjson.dumps(to_json_dict(event), option=orjson.OPT_SORT_KEYS)


def upcast(data: dict[str, Any]) -> tuple[type[Event], dict[str, Any]]:
    """Resolve the class of a raw event dict and bring it to the current schema version."""
    name = data.get("type")
    if not isinstance(name, str):
        raise EventDecodeError("event has no string 'type'")
    cls = resolve_type(name)
    data = {**data, "type": cls.type_name()}
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise EventDecodeError(f"bad schema_version {version!r} for {name}")
    current = cls.current_version()
    if version > current:
        raise EventDecodeError(f"{name} v{version} is newer than this code (v{current})")
    while version < current:
        upcaster = cls.upcasters.get(version)
        if upcaster is None:
            raise EventDecodeError(f"no upcaster for {name} v{version}")
        data = upcaster(dict(data))
        version += 1
        data["schema_version"] = version
    return cls, data


def decode_dict(data: dict[str, Any]) -> Event:
    """Decode a raw JSON dict into its event, upcasting older versions."""
    cls, current = upcast(data)
    try:
        return cls.model_validate(current)
    except ValidationError as exc:
        raise EventDecodeError(f"invalid {cls.type_name()}: {exc}") from exc


def decode(raw: bytes | str) -> Event:
    """Decode canonical (or any) JSON bytes into its event."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventDecodeError("an event must be a JSON object")
    return decode_dict(data)

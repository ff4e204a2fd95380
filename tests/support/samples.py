"""One valid example of every event type, for round-trip and broker tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import events

T0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)

PAYLOADS: dict[str, dict[str, Any]] = {
    "objective.drafted": {
        "title": "Delight customers",
        "description": "NPS up",
        "owner": "ana",
        "level": "company",
        "parent_id": None,
        "period": {"start": "2026-01-01", "end": "2026-03-31"},
    },
    "objective.revised": {"title": "Delight every customer"},
    "objective.realigned": {"parent_id": str(UUID(int=7))},
    "objective.rescheduled": {"period": {"start": "2026-01-01", "end": "2026-06-30"}},
    "objective.closed": {"note": "done"},
    "objective.reopened": {},
    "objective.archived": {},
    "key_result.added": {
        "kr_id": str(UUID(int=1)),
        "title": "Churn down",
        "kind": "metric",
        "start": 100.0,
        "target": 50.0,
        "weight": 2.0,
        "kpi_id": str(UUID(int=2)),
        "aggregation": "avg",
    },
    "key_result.revised": {"kr_id": str(UUID(int=1)), "title": "Churn way down"},
    "key_result.retargeted": {"kr_id": str(UUID(int=1)), "target": 40.0, "reason": "too easy"},
    "key_result.reweighted": {"kr_id": str(UUID(int=1)), "weight": 3.0},
    "key_result.removed": {"kr_id": str(UUID(int=1))},
    "key_result.checked_in": {
        "kr_id": str(UUID(int=1)),
        "value": 80.0,
        "confidence": 0.7,
        "note": "on it",
    },
    "key_result.promoted": {"kr_id": str(UUID(int=1)), "kpi_id": str(UUID(int=3))},
    "kpi.defined": {
        "name": "Weekly active users",
        "unit": "users",
        "direction": "increase",
        "target": 1000.0,
        "amber": 900.0,
        "interval": "week",
        "aggregation": "last",
        "owner": "bo",
    },
    "kpi.revised": {"name": "WAU"},
    "kpi.retargeted": {"target": 1200.0, "amber": 1080.0, "reason": "growth"},
    "kpi.retired": {"reason": "replaced"},
    "reading.recorded": {
        "kpi_id": str(UUID(int=2)),
        "value": 42.5,
        "observed_at": "2026-01-15T09:00:00Z",
        "reading_id": "crm-1",
        "source": "crm",
    },
    "detection.raised": {
        "kind": "over_reach",
        "reason": "forecast",
        "subject_type": "objective",
        "subject_id": str(UUID(int=9)),
        "period": "2026-01-01/2026-03-31",
        "detected_at": "2026-02-01T00:00:00Z",
        "policy_version": "v1",
        "evidence": {"forecast": 0.5, "expected": 0.3},
    },
    "detection.resolved": {
        "kind": "over_reach",
        "reason": "forecast",
        "subject_type": "objective",
        "subject_id": str(UUID(int=9)),
        "period": "2026-01-01/2026-03-31",
        "resolved_at": "2026-02-10T00:00:00Z",
        "policy_version": "v1",
        "evidence": {"forecast": 0.8},
    },
}


def sample(
    type_name: str, *, stream_id: UUID | None = None, version: int = 1, **overrides: Any
) -> events.Event:
    """A valid, unsealed event of `type_name`."""
    cls = events.EVENT_TYPES[type_name]
    data: dict[str, Any] = {
        "event_id": uuid4(),
        "org_id": "acme",
        "stream_id": stream_id or uuid4(),
        "stream_version": version,
        "occurred_at": T0,
        "recorded_at": T0,
        "actor": "tester",
        **PAYLOADS[type_name],
        **overrides,
    }
    return cls.model_validate(data)


def every_event() -> list[events.Event]:
    """One sealed example of every event type."""
    return [events.seal(sample(name), None) for name in events.EVENT_TYPES]


def sealed_chain(types: list[str], stream: UUID | None = None) -> list[events.Event]:
    """Sample events of these types on one stream (a new one unless given), versions from
    1, each sealed onto the one before (a valid hash chain)."""
    stream = stream or uuid4()
    sealed: list[events.Event] = []
    prev = None
    for version, name in enumerate(types, start=1):
        event = events.seal(sample(name, stream_id=stream, version=version), prev)
        prev = event.hash
        sealed.append(event)
    return sealed

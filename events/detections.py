"""Detections: over- and under-reach findings raised and resolved by the processor."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from events.envelope import Event, UtcDatetime

DetectionKind = Literal["over_reach", "under_reach", "kpi_breach", "stale_kpi"]
DetectionReason = Literal[
    "forecast", "final", "achieved_early", "target_already_met", "chronic", "red", "no_data"
]
SubjectType = Literal["objective", "key_result", "kpi", "owner"]
Evidence = dict[str, float | str | None]


class DetectionRaised(Event):
    """A condition started to hold. Its stream is the detection id."""

    type: Literal["detection.raised"] = "detection.raised"
    schema_version: Literal[1] = 1
    kind: DetectionKind
    reason: DetectionReason
    subject_type: SubjectType
    subject_id: Annotated[str, Field(min_length=1, max_length=200)]
    period: str
    detected_at: UtcDatetime
    policy_version: str
    evidence: Evidence


class DetectionResolved(Event):
    """The condition stopped holding."""

    type: Literal["detection.resolved"] = "detection.resolved"
    schema_version: Literal[1] = 1
    kind: DetectionKind
    reason: DetectionReason
    subject_type: SubjectType
    subject_id: Annotated[str, Field(min_length=1, max_length=200)]
    period: str
    resolved_at: UtcDatetime
    policy_version: str
    evidence: Evidence

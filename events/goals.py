"""Objective and key-result events. Both live on the objective's stream."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field

from events.envelope import Event, FiniteFloat, Period

Level = Literal["company", "department", "team", "individual"]
KeyResultKind = Literal["metric", "milestone", "maintain"]
Comparison = Literal["at_least", "at_most"]
Aggregation = Literal["last", "sum", "avg", "min", "max", "count"]
Title = Annotated[str, Field(min_length=1, max_length=200)]
Owner = Annotated[str, Field(min_length=1, max_length=100)]
Text = Annotated[str, Field(max_length=10_000)]


class ObjectiveDrafted(Event):
    type: Literal["objective.drafted"] = "objective.drafted"
    schema_version: Literal[1] = 1
    title: Title
    description: Text | None = None
    owner: Owner
    level: Level
    parent_id: UUID | None = None
    period: Period


class ObjectiveRevised(Event):
    """Title, description and/or owner changed; absent fields are unchanged, and an empty
    description clears it."""

    type: Literal["objective.revised"] = "objective.revised"
    schema_version: Literal[1] = 1
    title: Title | None = None
    description: Text | None = None
    owner: Owner | None = None


class ObjectiveRealigned(Event):
    type: Literal["objective.realigned"] = "objective.realigned"
    schema_version: Literal[1] = 1
    parent_id: UUID | None


class ObjectiveRescheduled(Event):
    type: Literal["objective.rescheduled"] = "objective.rescheduled"
    schema_version: Literal[1] = 1
    period: Period


class ObjectiveClosed(Event):
    type: Literal["objective.closed"] = "objective.closed"
    schema_version: Literal[1] = 1
    note: Text | None = None


class ObjectiveReopened(Event):
    type: Literal["objective.reopened"] = "objective.reopened"
    schema_version: Literal[1] = 1


class ObjectiveArchived(Event):
    type: Literal["objective.archived"] = "objective.archived"
    schema_version: Literal[1] = 1


class KeyResultAdded(Event):
    type: Literal["key_result.added"] = "key_result.added"
    schema_version: Literal[1] = 1
    kr_id: UUID
    title: Title
    kind: KeyResultKind
    start: FiniteFloat | None = None
    target: FiniteFloat | None = None
    comparison: Comparison | None = None
    unit: Annotated[str, Field(max_length=50)] | None = None
    weight: Annotated[FiniteFloat, Field(gt=0)] = 1.0
    kpi_id: UUID | None = None
    aggregation: Aggregation | None = None


class KeyResultRevised(Event):
    type: Literal["key_result.revised"] = "key_result.revised"
    schema_version: Literal[1] = 1
    kr_id: UUID
    title: Title


class KeyResultRetargeted(Event):
    """Start and/or target changed from `occurred_at` on; the past keeps the old ones."""

    type: Literal["key_result.retargeted"] = "key_result.retargeted"
    schema_version: Literal[1] = 1
    kr_id: UUID
    start: FiniteFloat | None = None
    target: FiniteFloat | None = None
    reason: Text | None = None


class KeyResultReweighted(Event):
    type: Literal["key_result.reweighted"] = "key_result.reweighted"
    schema_version: Literal[1] = 1
    kr_id: UUID
    weight: Annotated[FiniteFloat, Field(gt=0)]


class KeyResultRemoved(Event):
    type: Literal["key_result.removed"] = "key_result.removed"
    schema_version: Literal[1] = 1
    kr_id: UUID


def _confidence_percent_to_share(data: dict[str, Any]) -> dict[str, Any]:
    # v1 (before the public contract) stored confidence as a percentage 0–100.
    confidence = data.get("confidence")
    if confidence is not None:
        data["confidence"] = confidence / 100
    data["schema_version"] = 2
    return data


class KeyResultCheckedIn(Event):
    """A check-in: a value (metric, maintain) or done (milestone), with confidence 0–1."""

    type: Literal["key_result.checked_in"] = "key_result.checked_in"
    schema_version: Literal[2] = 2
    kr_id: UUID
    value: FiniteFloat | None = None
    done: bool | None = None
    confidence: Annotated[FiniteFloat, Field(ge=0, le=1)] | None = None
    note: Text | None = None

    upcasters = {1: _confidence_percent_to_share}


class KeyResultPromoted(Event):
    """The key result became the ongoing KPI `kpi_id` and stays linked to it."""

    type: Literal["key_result.promoted"] = "key_result.promoted"
    schema_version: Literal[1] = 1
    kr_id: UUID
    kpi_id: UUID

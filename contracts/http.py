"""Request and response models of the goal commands (API.md, "Goal commands").

Unknown fields are rejected (422). Every command accepts an optional `occurred_at` (valid
time, RFC 3339 with an offset). Imports nothing internal.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.readings import Rfc3339

Level = Literal["company", "department", "team", "individual"]
KeyResultKind = Literal["metric", "milestone", "maintain"]
Comparison = Literal["at_least", "at_most"]
Aggregation = Literal["last", "sum", "avg", "min", "max", "count"]
Direction = Literal["increase", "decrease"]
Interval = Literal["day", "week", "month"]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _no_nul(value: str) -> str:
    # U+0000 cannot be stored in a PostgreSQL text column (the projections would refuse
    # the event after the command was accepted), so no text field takes it, on any store.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Number = Annotated[float, AfterValidator(_finite)]
Weight = Annotated[float, AfterValidator(_finite), Field(gt=0)]
Title = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Owner = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
Text = Annotated[str, Field(max_length=10_000), AfterValidator(_no_nul)]
Unit = Annotated[str, Field(max_length=50), AfterValidator(_no_nul)]
OccurredAt = Rfc3339


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    occurred_at: OccurredAt | None = None


class PeriodIn(BaseModel):
    """From `start` 00:00Z to the day after `end` 00:00Z."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> PeriodIn:
        if self.start > self.end:
            raise ValueError("period start must not be after its end")
        return self


class ObjectiveCreate(_Command):
    title: Title
    description: Text | None = None
    owner: Owner
    level: Level
    parent_id: UUID | None = None
    period: PeriodIn


class ObjectiveUpdate(_Command):
    """Any of the fields; an explicit `parent_id: null` detaches the objective."""

    title: Title | None = None
    description: Text | None = None
    owner: Owner | None = None
    parent_id: UUID | None = None
    period: PeriodIn | None = None

    @model_validator(mode="after")
    def _something(self) -> ObjectiveUpdate:
        if not (self.model_fields_set - {"occurred_at"}):
            raise ValueError("give at least one of title, description, owner, parent_id, period")
        for name in ("title", "owner", "period"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ObjectiveClose(_Command):
    note: Text | None = None


class ObjectiveTransition(_Command):
    """Body of reopen and archive: nothing but the optional `occurred_at`."""


class KeyResultCreate(_Command):
    title: Title
    kind: KeyResultKind
    start: Number | None = None
    target: Number | None = None
    comparison: Comparison | None = None
    unit: Unit | None = None
    weight: Weight = 1.0
    kpi_id: UUID | None = None
    aggregation: Aggregation | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> KeyResultCreate:
        if self.kind == "metric":
            if self.start is None or self.target is None:
                raise ValueError("a metric key result needs start and target")
            if self.start == self.target:
                raise ValueError("a metric key result needs start ≠ target")
            if self.comparison is not None:
                raise ValueError("comparison is for maintain key results")
        elif self.kind == "maintain":
            if self.target is None or self.comparison is None:
                raise ValueError("a maintain key result needs target and comparison")
            if self.start is not None:
                raise ValueError("start is for metric key results")
        else:
            given = [
                n for n in ("start", "target", "comparison", "kpi_id", "aggregation")
                if getattr(self, n) is not None
            ]  # fmt: skip
            if given:
                raise ValueError(f"a milestone key result takes no {', '.join(given)}")
        return self


class KeyResultUpdate(_Command):
    title: Title | None = None
    start: Number | None = None
    target: Number | None = None
    weight: Weight | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> KeyResultUpdate:
        if all(getattr(self, n) is None for n in ("title", "start", "target", "weight")):
            raise ValueError("give at least one of title, start, target, weight")
        return self


class CheckInCreate(_Command):
    value: Number | None = None
    done: bool | None = None
    confidence: Annotated[Number, Field(ge=0, le=1)] | None = None
    note: Text | None = None


class PromoteCreate(_Command):
    interval: Interval | None = None
    amber: Number | None = None


class KpiCreate(_Command):
    name: Title
    unit: Unit | None = None
    direction: Direction
    target: Number
    amber: Number | None = None
    interval: Interval
    aggregation: Aggregation
    owner: Owner | None = None
    description: Text | None = None

    @model_validator(mode="after")
    def _amber_before_target(self) -> KpiCreate:
        if self.amber is not None:
            check_amber(self.direction, self.target, self.amber)
        return self


class KpiUpdate(_Command):
    name: Title | None = None
    target: Number | None = None
    amber: Number | None = None
    owner: Owner | None = None
    description: Text | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> KpiUpdate:
        fields = ("name", "target", "amber", "owner", "description")
        if all(getattr(self, n) is None for n in fields):
            raise ValueError("give at least one of name, target, amber, owner, description")
        return self


class KpiRetire(_Command):
    reason: Text | None = None


def check_amber(direction: str, target: float, amber: float) -> None:
    """The amber threshold lies on the losing side of the target (ValueError otherwise)."""
    if direction == "increase" and amber > target:
        raise ValueError("amber must not exceed the target of an increasing KPI")
    if direction == "decrease" and amber < target:
        raise ValueError("amber must not be below the target of a decreasing KPI")


def default_amber(direction: str, target: float) -> float:
    """90 % of the target for increasing KPIs, 110 % for decreasing ones (API.md)."""
    return target * (0.9 if direction == "increase" else 1.1)


class WritePublic(BaseModel):
    """Answer of most commands: the resource, its new version, the last global position."""

    id: UUID
    version: int
    position: int


class CheckInPublic(BaseModel):
    version: int
    position: int


class PromotePublic(BaseModel):
    kpi_id: UUID
    position: int

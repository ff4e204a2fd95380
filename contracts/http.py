"""Request and response models of the goal commands (API.md, "Goal commands").

Unknown fields are rejected (422). Every command accepts an optional `occurred_at` (valid
time, RFC 3339 with an offset). Imports nothing internal.
"""

from __future__ import annotations

import math
from datetime import date
from fractions import Fraction
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from contracts.readings import MAX_MAGNITUDE, JsonNumber, number_text
from contracts.timestamps import Rfc3339, date_text

Level = Literal["company", "department", "team", "individual"]
KeyResultKind = Literal["metric", "milestone", "maintain"]
Comparison = Literal["at_least", "at_most"]
Aggregation = Literal["last", "sum", "avg", "min", "max", "count"]
Direction = Literal["increase", "decrease"]
Interval = Literal["day", "week", "month"]

# Limits of the numbers and dates a command takes (README, "Input limits"): what the
# scoring arithmetic can always evaluate. Numbers are JSON numbers within ±MAX_MAGNITUDE.
MIN_NONZERO_MEASURE = 1e-12
"""A key result's start and target are 0 or at least this in magnitude: metric progress
divides by (target − start), and a difference of subnormal size would make it infinite."""
MIN_WEIGHT = 1e-6
MAX_WEIGHT = 1e6
MAX_AMBER = MAX_MAGNITUDE * 11 / 10  # 1.1e15, exactly
"""An amber threshold may reach 110 % of the largest target: the default amber of a
decreasing KPI whose target is MAX_MAGNITUDE, so that it can be given back as it is."""
FIRST_PERIOD_DATE = date(1900, 1, 1)
LAST_PERIOD_DATE = date(2999, 12, 31)


def _no_nul(value: str) -> str:
    # U+0000 cannot be stored in a PostgreSQL text column (the projections would refuse
    # the event after the command was accepted), so no text field takes it, on any store.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _measurable(value: float) -> float:
    if value != 0 and abs(value) < MIN_NONZERO_MEASURE:
        raise ValueError(f"must be 0 or at least {number_text(MIN_NONZERO_MEASURE)} in magnitude")
    return value


def _amber_bounded(value: float) -> float:
    if -MAX_AMBER <= value <= MAX_AMBER:  # False for NaN too
        return value
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    raise ValueError(f"must be between {number_text(-MAX_AMBER)} and {number_text(MAX_AMBER)}")


def _period_date(value: date) -> date:
    if not FIRST_PERIOD_DATE <= value <= LAST_PERIOD_DATE:
        raise ValueError(
            f"must lie between {FIRST_PERIOD_DATE.isoformat()} and {LAST_PERIOD_DATE.isoformat()}"
        )
    return value


Number = JsonNumber
Measure = Annotated[JsonNumber, AfterValidator(_measurable)]
"""A key result's start or target."""
Amber = Annotated[float, Field(strict=True), AfterValidator(_amber_bounded)]
Weight = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=MIN_WEIGHT, le=MAX_WEIGHT)]
PeriodDate = Annotated[date, BeforeValidator(date_text), AfterValidator(_period_date)]
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

    start: PeriodDate
    end: PeriodDate

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
    """Any of the fields; an explicit `parent_id: null` detaches the objective, and
    `description: null` clears its description."""

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


class KeyResultRemove(_Command):
    """Body of DELETE …/key-results/{kr_id} (optional): nothing but the optional
    `occurred_at`, like reopen and archive (key_result.removed carries no reason)."""


class KeyResultCreate(_Command):
    title: Title
    kind: KeyResultKind
    start: Measure | None = None
    target: Measure | None = None
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
    start: Measure | None = None
    target: Measure | None = None
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
    amber: Amber | None = None


class KpiCreate(_Command):
    name: Title
    unit: Unit | None = None
    direction: Direction
    target: Number
    amber: Amber | None = None
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
    amber: Amber | None = None
    owner: Owner | None = None
    description: Text | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> KpiUpdate:
        fields = ("name", "target", "amber", "owner", "description")
        if all(getattr(self, n) is None for n in fields):
            given = [n for n in fields if n in self.model_fields_set]
            if given:  # {"amber": null}: it was given, as nothing
                raise ValueError(
                    f"{', '.join(given)}: null changes nothing (leave a field out to keep it);"
                    " give a value to at least one of name, target, amber, owner, description"
                )
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


_NINE_TENTHS = Fraction(9, 10)
_ELEVEN_TENTHS = Fraction(11, 10)


def default_amber(direction: str, target: float) -> float:
    """The default amber threshold (API.md): 90 % of a positive target for an increasing
    KPI, 110 % for a decreasing one; for any target, the target moved by a tenth of its
    magnitude to the losing side (increase target − |target|/10, decrease
    target + |target|/10), so it always passes `check_amber` (for an increasing KPI with
    target -100: -110, not -90). A target of 0 gives 0: no amber band unless one is given.
    Correctly rounded: 90 % of 13 is 11.7, not 13 * 0.9 = 11.700000000000001.
    """
    below = (direction == "increase") == (target >= 0)
    return float(Fraction(target) * (_NINE_TENTHS if below else _ELEVEN_TENTHS))


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

"""The envelope every okrstream event carries, and the base class of all events.

An event is a frozen pydantic model: its fields are the envelope plus the payload of its
type. The same class is stored in the event store and sent over Kafka as JSON, so there is
one definition of every message the platform produces.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)


def _to_utc(value: datetime) -> datetime:
    # One canonical form per instant, so hashes never depend on the writer's offset.
    return value.astimezone(UTC)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC. Naive datetimes are rejected."""

FiniteFloat = Annotated[float, AfterValidator(_finite)]
"""A float that is neither NaN nor infinite."""


class Period(BaseModel):
    """An objective's period: from `start` 00:00Z to the day after `end` 00:00Z."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: date
    end: date

    @model_validator(mode="after")
    def _start_not_after_end(self) -> Period:
        if self.start > self.end:
            raise ValueError("period start must not be after its end")
        return self


class Event(BaseModel):
    """Base class of every event: the envelope.

    Subclasses declare `type: Literal["stable.name"] = "stable.name"` (the stored name, which
    never changes) and `schema_version: Literal[N] = N` (bumped with an upcaster).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    type: str
    schema_version: int = 1
    event_id: UUID
    org_id: Annotated[str, Field(min_length=1, max_length=100)]
    stream_id: UUID
    stream_version: Annotated[int, Field(ge=1)]
    occurred_at: UtcDatetime
    recorded_at: UtcDatetime
    actor: Annotated[str, Field(max_length=200)] = "system"
    causation_id: UUID | None = None
    correlation_id: UUID | None = None
    prev_hash: str | None = None
    hash: str | None = None

    # Upcasters of older stored shapes, keyed by the version they upgrade *from*.
    # Each takes and returns the raw JSON dict.
    upcasters: ClassVar[dict[int, Any]] = {}

    @classmethod
    def type_name(cls) -> str:
        """The stable stored name of this event class (never its Python path)."""
        default = cls.model_fields["type"].default
        assert isinstance(default, str), f"{cls.__name__} must declare a type default"
        return default

    @classmethod
    def current_version(cls) -> int:
        """The schema version this code writes."""
        default = cls.model_fields["schema_version"].default
        assert isinstance(default, int)
        return default

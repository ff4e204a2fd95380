"""KPI events (the KPI's own stream) and readings (one stream per reading)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from events.envelope import Event, FiniteFloat, UtcDatetime
from events.goals import Aggregation, Owner, Text, Title

Direction = Literal["increase", "decrease"]
Interval = Literal["day", "week", "month"]


class KpiDefined(Event):
    type: Literal["kpi.defined"] = "kpi.defined"
    schema_version: Literal[1] = 1
    name: Title
    unit: Annotated[str, Field(max_length=50)] | None = None
    direction: Direction
    target: FiniteFloat
    amber: FiniteFloat
    interval: Interval
    aggregation: Aggregation
    owner: Owner | None = None
    description: Text | None = None
    promoted_from_objective_id: UUID | None = None
    promoted_from_kr_id: UUID | None = None


class KpiRevised(Event):
    """Name, owner and/or description changed; absent fields are unchanged."""

    type: Literal["kpi.revised"] = "kpi.revised"
    schema_version: Literal[1] = 1
    name: Title | None = None
    owner: Owner | None = None
    description: Text | None = None
    reason: Text | None = None


class KpiRetargeted(Event):
    """Target and/or amber threshold changed from `occurred_at` on."""

    type: Literal["kpi.retargeted"] = "kpi.retargeted"
    schema_version: Literal[1] = 1
    target: FiniteFloat
    amber: FiniteFloat
    reason: Text | None = None


class KpiRetired(Event):
    type: Literal["kpi.retired"] = "kpi.retired"
    schema_version: Literal[1] = 1
    reason: Text | None = None


class ReadingRecorded(Event):
    """One KPI reading. Its stream is derived from (org, kpi, reading_id): one event each.

    `occurred_at` equals `observed_at` (valid time); `recorded_at` is knowledge time.
    """

    type: Literal["reading.recorded"] = "reading.recorded"
    schema_version: Literal[1] = 1
    kpi_id: UUID
    value: FiniteFloat
    observed_at: UtcDatetime
    reading_id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Annotated[str, Field(max_length=200)] | None = None

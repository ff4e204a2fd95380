"""The readings contract: HTTP batches and direct Kafka producers share one reading shape."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

MAX_READINGS_PER_REQUEST = 10_000
MAX_FUTURE_SKEW_S = 300  # observed_at may be at most 5 minutes in the future


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("value must be a finite number")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class ReadingIn(BaseModel):
    """One KPI reading as integrations send it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kpi_id: UUID
    value: Annotated[float, AfterValidator(_finite)]
    observed_at: Annotated[AwareDatetime, AfterValidator(_utc)]
    reading_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    source: Annotated[str, Field(max_length=200)] | None = None


class KafkaReading(ReadingIn):
    """A reading written straight to okr.kpi-readings.v1 by an integration (keyed by kpi_id)."""

    org_id: Annotated[str, Field(min_length=1, max_length=100)]


class ReadingsBatch(BaseModel):
    """Body of POST /v1/readings. Items are validated one by one by the ingest service."""

    model_config = ConfigDict(extra="forbid")

    readings: Annotated[list[dict[str, object]], Field(max_length=MAX_READINGS_PER_REQUEST)]


class RejectedReading(BaseModel):
    index: int
    error: str


class ReadingsAccepted(BaseModel):
    """202 answer of POST /v1/readings."""

    accepted: int
    duplicates: int
    rejected: list[RejectedReading]
    position: int

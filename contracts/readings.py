"""The readings contract: HTTP batches and direct Kafka producers share one reading shape."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated
from uuid import NAMESPACE_URL, UUID, uuid5

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


def derive_reading_id(
    kpi_id: UUID | str, observed_at: datetime, value: float, source: str | None
) -> str:
    """The reading id of a reading sent without one (HTTP ingest and direct Kafka alike).

    sha256 over "kpi_id|observed_at (UTC isoformat)|repr(value)|source", so a blind retry
    of the same reading derives the same id and never counts twice.
    """
    when = observed_at.astimezone(UTC).isoformat()
    text = f"{str(kpi_id).lower()}|{when}|{float(value)!r}|{source or ''}"
    return "derived-" + hashlib.sha256(text.encode()).hexdigest()


def reading_stream_id(org_id: str, kpi_id: UUID | str, reading_id: str) -> UUID:
    """The stream (and event) id of a reading: one per (org, kpi, reading id)."""
    return uuid5(NAMESPACE_URL, f"okrstream:reading:{org_id}:{str(kpi_id).lower()}:{reading_id}")

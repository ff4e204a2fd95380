"""The readings contract: HTTP batches and direct Kafka producers share one reading shape."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated
from uuid import NAMESPACE_URL, UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.timestamps import Rfc3339

MAX_READINGS_PER_REQUEST = 10_000
MAX_FUTURE_SKEW_S = 300  # observed_at may be at most 5 minutes in the future
MAX_MAGNITUDE = 1e15
"""The largest magnitude of a number the platform takes (reading values, key result and
KPI targets, check-in values, …). Below 2**53, so whole numbers up to it are exact, and far
enough from the float limit (~1.8e308) that the scoring arithmetic (differences, ratios,
weighted sums) can never overflow."""


def number_text(value: float) -> str:
    """A limit as people write it: 1e15, -1.1e15, 1e-12 (for error messages)."""
    return format(value, "g").replace("e+", "e").replace("e-0", "e-").replace("e0", "e")


def bounded(value: float) -> float:
    """`value` when it is finite and at most MAX_MAGNITUDE in magnitude (ValueError
    otherwise)."""
    if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # False for NaN too
        return value
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    raise ValueError(
        f"must be between {number_text(-MAX_MAGNITUDE)} and {number_text(MAX_MAGNITUDE)}"
    )


JsonNumber = Annotated[float, Field(strict=True), AfterValidator(bounded)]
"""A JSON number (integer or not) within ±MAX_MAGNITUDE. Strict: true/false and numeric
strings are refused, not read as 1.0/0.0 or parsed."""


def no_nul(value: str) -> str:
    """Text fields refuse U+0000: a PostgreSQL text column cannot hold it, so an accepted
    reading carrying one could not be projected."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


class ReadingIn(BaseModel):
    """One KPI reading as integrations send it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kpi_id: UUID
    value: JsonNumber
    observed_at: Rfc3339
    reading_id: (
        Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)] | None
    ) = None
    source: Annotated[str, Field(max_length=200), AfterValidator(no_nul)] | None = None


class KafkaReading(ReadingIn):
    """A reading written straight to okr.kpi-readings.v1 by an integration (keyed by kpi_id)."""

    org_id: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(no_nul)]


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
    of the same reading derives the same id and never counts twice. `-0` is the same
    reading as `0` (`+ 0.0` makes -0.0 0.0): a client that writes the one and retries with
    the other does not count it twice.
    """
    when = observed_at.astimezone(UTC).isoformat()
    text = f"{str(kpi_id).lower()}|{when}|{float(value) + 0.0!r}|{source or ''}"
    return "derived-" + hashlib.sha256(text.encode()).hexdigest()


_NAMESPACE = NAMESPACE_URL.bytes
# uuid5's version (5) and RFC 4122 variant bits, applied to the first 16 bytes of the SHA-1.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET = (5 << 76) | (0x8000 << 48)


def url_uuid5_hex(name: str) -> str:
    """`uuid5(NAMESPACE_URL, name).hex` computed with hashlib alone (hot paths): uuid5 is
    SHA-1(namespace bytes + name)[:16] with the version and variant bits set, which is
    exactly what this does without building UUID objects."""
    digest = hashlib.sha1(_NAMESPACE + name.encode(), usedforsecurity=False).digest()
    return "%032x" % ((int.from_bytes(digest[:16], "big") & _CLEAR) | _SET)


def reading_stream_hex(org_id: str, kpi_id: UUID | str, reading_id: str) -> str:
    """`reading_stream_id(...).hex` without UUID objects (the bulk-ingest hot path)."""
    return url_uuid5_hex(f"okrstream:reading:{org_id}:{str(kpi_id).lower()}:{reading_id}")


def dashed(hex32: str) -> str:
    """The canonical 8-4-4-4-12 text of a UUID given as 32 lower-case hex digits."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def reading_stream_id(org_id: str, kpi_id: UUID | str, reading_id: str) -> UUID:
    """The stream (and event) id of a reading: one per (org, kpi, reading id).

    Equal to uuid5(NAMESPACE_URL, f"okrstream:reading:{org_id}:{kpi_id}:{reading_id}")."""
    return UUID(hex=reading_stream_hex(org_id, kpi_id, reading_id))

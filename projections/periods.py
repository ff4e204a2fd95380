"""An objective's period and the expected progress through it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


def as_utc(t: datetime, name: str = "datetime") -> datetime:
    """Return `t` converted to UTC; raise ValueError when it is naive."""
    if t.tzinfo is UTC:  # the common case, on every evaluation's hot path
        return t
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """Calendar dates `start`..`end` inclusive: from start 00:00Z to the day after end 00:00Z."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"period start {self.start} is after its end {self.end}")

    @property
    def starts_at(self) -> datetime:
        """The first instant of the period: `start` at 00:00 UTC."""
        return datetime.combine(self.start, time(), tzinfo=UTC)

    @property
    def ends_at(self) -> datetime:
        """The first instant after the period (exclusive): the day after `end` at 00:00 UTC."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=UTC)

    @property
    def iso(self) -> str:
        """ISO 8601 interval of the dates, e.g. "2026-01-01/2026-03-31" (detection period)."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def contains(self, t: datetime) -> bool:
        """Whether instant `t` lies in [starts_at, ends_at)."""
        return self.starts_at <= as_utc(t, "t") < self.ends_at


def expected_progress(period: Period, at: datetime) -> float:
    """Expected progress e in [0, 1]: elapsed share of the period at `at`, linear in time.

    e = clamp((at - starts_at) / (ends_at - starts_at), 0, 1).
    """
    elapsed = as_utc(at, "at") - period.starts_at
    share = elapsed / (period.ends_at - period.starts_at)
    return min(1.0, max(0.0, share))

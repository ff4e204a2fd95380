"""KPI arithmetic: interval buckets, order-independent aggregation, status and staleness."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Literal, assert_never

from projections.periods import as_utc
from projections.policy import DEFAULT_POLICY, ScoringPolicy

Interval = Literal["day", "week", "month"]
Aggregation = Literal["last", "sum", "avg", "min", "max", "count"]
Direction = Literal["increase", "decrease"]
KpiStatus = Literal["green", "amber", "red", "no_data"]

# Nominal interval lengths for staleness; a month counts as 30 days.
INTERVAL_LENGTH: dict[Interval, timedelta] = {
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
}


def bucket_start(observed_at: datetime, interval: Interval) -> datetime:
    """Start (UTC) of the bucket holding `observed_at`.

    day: that UTC day 00:00Z; week: the ISO week's Monday 00:00Z; month: the 1st 00:00Z.
    """
    first = bucket_day(as_utc(observed_at, "observed_at").date(), interval)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def bucket_day(day: date, interval: Interval) -> date:
    """The first day of the bucket holding the UTC day `day`."""
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    assert_never(interval)


def bucket_end(start: datetime, interval: Interval) -> datetime:
    """First instant (UTC, exclusive) after the bucket that holds `start`."""
    first = bucket_start(start, interval)
    if interval == "day":
        return first + timedelta(days=1)
    if interval == "week":
        return first + timedelta(days=7)
    if interval == "month":
        if first.month == 12:
            return first.replace(year=first.year + 1, month=1)
        return first.replace(month=first.month + 1)
    assert_never(interval)


SCALE_BITS = 1074
"""Every finite float is n / 2**k with k <= 1074: sums are kept as exact integers scaled by
2**1074 (exact, order-independent, and much cheaper than Fraction arithmetic)."""
_ONE = 1 << SCALE_BITS


def scaled(value: float) -> int:
    """`value` (finite) times 2**1074, exactly, as an int."""
    num, den = float(value).as_integer_ratio()
    return num << (SCALE_BITS - den.bit_length() + 1)


def scaled_sum(values: Iterable[float]) -> int:
    """The exact sum of `values` (finite floats) times 2**1074."""
    pairs = [float(v).as_integer_ratio() for v in values]
    if not pairs:
        return 0
    # Sum on the batch's own finest scale (small ints), then scale once.
    bits = max(d.bit_length() for _, d in pairs)
    total = sum(n << (bits - d.bit_length()) for n, d in pairs)
    return total << (SCALE_BITS + 1 - bits)


# Decimal texts of the powers of two, both ways (a 1074-bit int <-> text is the slow part).
_DEN_TEXT = [str(1 << e) for e in range(SCALE_BITS + 1)]
_DEN_EXP = {t: e for e, t in enumerate(_DEN_TEXT)}


def total_text(scaled_total: int) -> str:
    """The stored text of an exact sum: the reduced fraction "num/den" (den a power of two),
    the same text `fractions.Fraction` gives and parses."""
    if scaled_total == 0:
        return "0/1"
    shift = min((scaled_total & -scaled_total).bit_length() - 1, SCALE_BITS)
    return f"{scaled_total >> shift}/{_DEN_TEXT[SCALE_BITS - shift]}"


def parse_total(text: str) -> int:
    """Inverse of `total_text` (also reads "num" alone): the exact sum times 2**1074."""
    num, _, den = text.partition("/")
    exp = _DEN_EXP.get(den or "1")
    if exp is None:
        raise ValueError(f"not an exact float sum: {text!r}")
    return int(num) << (SCALE_BITS - exp)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"reading value must be finite, got {value!r}")
    # `+ 0.0` turns -0.0 into 0.0, so min/max never depend on which zero came first.
    return float(value) + 0.0


@dataclass(frozen=True, slots=True)
class Accumulator:
    """Aggregate state of a set of readings, equal whatever the order of adds and merges.

    `scaled_total` is the exact sum of the values times 2**1074 (every float is a dyadic
    rational n / 2**k, k <= 1074), so sums and averages do not depend on the order readings
    arrive in; `exact_total` is the same sum as a Fraction.
    "last" is the reading with the greatest (observed_at, key); ties on both fall back to
    the greater value, so even duplicated keys stay order-independent.
    """

    count: int
    scaled_total: int
    minimum: float | None
    maximum: float | None
    last_at: datetime | None
    last_value: float | None
    last_key: str | None

    @classmethod
    def empty(cls) -> Accumulator:
        """The accumulator of no readings."""
        return cls(0, 0, None, None, None, None, None)

    @classmethod
    def of(cls, value: float, observed_at: datetime, key: str) -> Accumulator:
        """The accumulator of one reading: `value` observed at `observed_at`, reading id `key`."""
        v = _finite(value)
        return cls(1, scaled(v), v, v, as_utc(observed_at, "observed_at"), v, key)

    @classmethod
    def of_values(
        cls, values: Iterable[float], last_at: datetime, last_key: str, last_value: float
    ) -> Accumulator:
        """The accumulator of readings with these values whose latest (by observed_at, then
        reading id, then value) is (`last_at`, `last_key`, `last_value`): equal to adding
        them one by one, without building one accumulator per reading."""
        vs = [_finite(v) for v in values]
        if not vs:
            return cls.empty()
        return cls(
            len(vs),
            scaled_sum(vs),
            min(vs),
            max(vs),
            as_utc(last_at, "last_at"),
            _finite(last_value),
            last_key,
        )

    @property
    def exact_total(self) -> Fraction:
        """The exact sum of the values."""
        return Fraction(self.scaled_total, _ONE)

    @property
    def total(self) -> float:
        """Sum of the values, rounded once to the nearest float."""
        return self.scaled_total / _ONE  # int / int is correctly rounded

    def add(self, value: float, observed_at: datetime, key: str) -> Accumulator:
        """A new accumulator with one more reading (`key` = reading id, breaks ties for last)."""
        return self.merge(Accumulator.of(value, observed_at, key))

    def merge(self, other: Accumulator) -> Accumulator:
        """The accumulator of both sets of readings (commutative and associative)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        assert self.minimum is not None
        assert self.maximum is not None
        assert other.minimum is not None
        assert other.maximum is not None
        latest = max(self, other, key=_last_order)
        return Accumulator(
            count=self.count + other.count,
            scaled_total=self.scaled_total + other.scaled_total,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            last_at=latest.last_at,
            last_value=latest.last_value,
            last_key=latest.last_key,
        )

    def value(self, aggregation: Aggregation) -> float | None:
        """The aggregate in the readings' unit (count: a number); None without readings.

        count gives 0.0 without readings; avg is the exact mean rounded once.
        """
        return _value(
            aggregation, self.count, self.scaled_total, self.minimum, self.maximum, self.last_value
        )


def _value(
    aggregation: Aggregation,
    count: int,
    scaled_total: int,
    minimum: float | None,
    maximum: float | None,
    last_value: float | None,
) -> float | None:
    if aggregation == "count":
        return float(count)
    if count == 0:
        return None
    if aggregation == "sum":
        return scaled_total / _ONE
    if aggregation == "avg":
        return scaled_total / (count << SCALE_BITS)
    if aggregation == "min":
        return minimum
    if aggregation == "max":
        return maximum
    if aggregation == "last":
        return last_value
    assert_never(aggregation)


class Running:
    """An Accumulator folded in place: `merge` adds a set of readings, `value` is
    Accumulator.value of everything merged so far. For long folds in order (a KPI's days,
    Series), where a new frozen Accumulator per step would cost several times more."""

    __slots__ = ("count", "last", "maximum", "minimum", "scaled_total")

    def __init__(self) -> None:
        self.count = 0
        self.scaled_total = 0
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.last: tuple[datetime, str, float] | None = None  # Accumulator's last order

    def merge(self, acc: Accumulator) -> None:
        if acc.count == 0:
            return
        self.count += acc.count
        self.scaled_total += acc.scaled_total
        low, high = acc.minimum, acc.maximum
        assert low is not None
        assert high is not None
        if self.minimum is None or low < self.minimum:
            self.minimum = low
        if self.maximum is None or high > self.maximum:
            self.maximum = high
        order = _last_order(acc)
        if self.last is None or order > self.last:
            self.last = order

    def value(self, aggregation: Aggregation) -> float | None:
        last = self.last
        return _value(
            aggregation,
            self.count,
            self.scaled_total,
            self.minimum,
            self.maximum,
            None if last is None else last[2],
        )


def _last_order(acc: Accumulator) -> tuple[datetime, str, float]:
    assert acc.last_at is not None
    assert acc.last_key is not None
    assert acc.last_value is not None
    return (acc.last_at, acc.last_key, acc.last_value)


def aggregate(
    readings: Iterable[tuple[float, datetime, str]], aggregation: Aggregation
) -> float | None:
    """Aggregate (value, observed_at, reading id) readings; None without readings (count: 0.0)."""
    acc = Accumulator.empty()
    for value, observed_at, key in readings:
        acc = acc.add(value, observed_at, key)
    return acc.value(aggregation)


def kpi_status(value: float | None, direction: Direction, target: float, amber: float) -> KpiStatus:
    """Status of a bucket value against target and amber thresholds; no_data when None.

    increase: green if v >= target, amber if v >= amber, else red.
    decrease: green if v <= target, amber if v <= amber, else red.
    """
    if value is None:
        return "no_data"
    if direction == "increase":
        if value >= target:
            return "green"
        return "amber" if value >= amber else "red"
    if direction == "decrease":
        if value <= target:
            return "green"
        return "amber" if value <= amber else "red"
    assert_never(direction)


def stale_since(
    last_reading_at: datetime | None,
    created_at: datetime,
    interval: Interval,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> datetime:
    """The instant (UTC) from which a KPI with no further reading counts as stale."""
    reference = last_reading_at if last_reading_at is not None else created_at
    return as_utc(reference, "reference") + policy.stale_factor * INTERVAL_LENGTH[interval]


def is_stale(
    last_reading_at: datetime | None,
    created_at: datetime,
    interval: Interval,
    at: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> bool:
    """Whether at `at` no reading came for stale_factor x interval (month = 30 days).

    Measured since the last reading, or since creation when there is none; stale from the
    instant that span has fully elapsed (elapsed >= stale_factor x interval).
    """
    return as_utc(at, "at") >= stale_since(last_reading_at, created_at, interval, policy)


@dataclass(frozen=True, slots=True)
class KpiTarget:
    """The KPI's target and amber threshold from `since` (the change's occurred_at) on."""

    since: datetime
    target: float
    amber: float


def kpi_targets(changes: Iterable[KpiTarget]) -> tuple[KpiTarget, ...]:
    """The KPI's targets in stream order (definition first, then each retargeting), as a
    history sorted by `since`. The definition's entry stays first: it applies to all time
    before the next change. Later entries sort stably, so of two changes valid from the
    same instant the later one in the stream wins."""
    found = tuple(changes)
    if not found:
        return ()
    return (found[0], *sorted(found[1:], key=lambda t: as_utc(t.since, "since")))


def target_in_force(targets: tuple[KpiTarget, ...], at: datetime) -> KpiTarget:
    """The target in force at `at`: the latest change with since <= at, else the first (a
    target change never applies to the time before it)."""
    if not targets:
        raise ValueError("a KPI has at least its defining target")
    at = as_utc(at, "at")
    chosen = targets[0]
    for t in targets[1:]:
        if as_utc(t.since, "since") <= at:
            chosen = t
    return chosen


AHEAD = timedelta(minutes=5)
"""How far ahead of the clock a command's occurred_at may be (API.md, "Every command"): a
change dated that little ahead is in force at once for what is evaluated now, as no later
evaluation would come for it (projections.objective.target_at; a KPI's view)."""


def target_now(targets: tuple[KpiTarget, ...], now: datetime) -> KpiTarget:
    """The KPI's target for a view of it now: in force now, or set to take force within
    AHEAD (the processor's KPI row and breach rule hold the latest target by valid time)."""
    now = as_utc(now, "now")
    latest = datetime.max.replace(tzinfo=UTC) - AHEAD
    return target_in_force(targets, now if now > latest else now + AHEAD)


def bucket_judged_at(start: datetime, interval: Interval, now: datetime) -> datetime:
    """The instant a bucket's value is judged against its target: its last microsecond, or
    `now` while the bucket is still open. A bucket that ended before a retargeting keeps the
    target it was judged with."""
    last = bucket_end(as_utc(start, "start"), interval) - timedelta(microseconds=1)
    return min(last, as_utc(now, "now"))

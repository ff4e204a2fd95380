from datetime import UTC, date, datetime, time, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.kpi import (
    SCALE_BITS,
    Accumulator,
    Aggregation,
    Direction,
    Interval,
    KpiTarget,
    Running,
    aggregate,
    bucket_day,
    bucket_end,
    bucket_judged_at,
    bucket_start,
    is_stale,
    kpi_status,
    kpi_targets,
    parse_total,
    scaled,
    scaled_sum,
    target_in_force,
    target_now,
    total_text,
)
from projections.policy import ScoringPolicy

AGGREGATIONS: list[Aggregation] = ["last", "sum", "avg", "min", "max", "count"]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# --- buckets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed_at", "interval", "start", "end"),
    [
        # UTC day, including the last microsecond of a day.
        (utc(2026, 3, 14, 23, 59, 59, 999999), "day", utc(2026, 3, 14), utc(2026, 3, 15)),
        (utc(2026, 3, 15), "day", utc(2026, 3, 15), utc(2026, 3, 16)),
        # ISO week across the year end: Thu 2026-01-01 is in the week of Mon 2025-12-29.
        (utc(2026, 1, 1, 12), "week", utc(2025, 12, 29), utc(2026, 1, 5)),
        (utc(2026, 1, 4, 23, 59, 59), "week", utc(2025, 12, 29), utc(2026, 1, 5)),
        (utc(2026, 1, 5), "week", utc(2026, 1, 5), utc(2026, 1, 12)),
        # Sunday stays in the week of the Monday before.
        (utc(2025, 12, 28, 23), "week", utc(2025, 12, 22), utc(2025, 12, 29)),
        # calendar month ends: 31, 30, December, leap February.
        (utc(2026, 1, 31, 23, 59), "month", utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 4, 30, 12), "month", utc(2026, 4, 1), utc(2026, 5, 1)),
        (utc(2025, 12, 31, 23, 59), "month", utc(2025, 12, 1), utc(2026, 1, 1)),
        (utc(2028, 2, 29, 12), "month", utc(2028, 2, 1), utc(2028, 3, 1)),
        (utc(2028, 2, 29, 12), "day", utc(2028, 2, 29), utc(2028, 3, 1)),
        (utc(2028, 3, 1), "month", utc(2028, 3, 1), utc(2028, 4, 1)),
    ],
)
def test_bucket_boundaries(
    observed_at: datetime, interval: Interval, start: datetime, end: datetime
) -> None:
    assert bucket_start(observed_at, interval) == start
    assert bucket_end(start, interval) == end
    assert bucket_start(observed_at, interval).tzinfo == UTC


def test_bucket_uses_utc_not_local_wall_clock() -> None:
    # 2026-02-01 00:30 at +02:00 is 2026-01-31 22:30Z: January, Saturday's day bucket.
    t = datetime(2026, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert bucket_start(t, "month") == utc(2026, 1, 1)
    assert bucket_start(t, "day") == utc(2026, 1, 31)


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["day", "week", "month"]),
)
def test_every_instant_falls_in_its_bucket(t: datetime, interval: Interval) -> None:
    start = bucket_start(t, interval)
    end = bucket_end(start, interval)
    assert start <= t < end
    assert bucket_start(end, interval) == end  # buckets tile time with no gap
    assert start.time() == time()
    assert start.tzinfo is UTC
    if interval == "day":
        assert start.date() == t.date()
    if interval == "week":
        assert start.weekday() == 0
        assert start.isocalendar()[:2] == t.isocalendar()[:2]
    if interval == "month":
        assert (start.year, start.month, start.day) == (t.year, t.month, 1)


@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1)),
    st.sampled_from(["day", "week", "month"]),
)
def test_bucket_day_is_bucket_start_on_days(day: date, interval: Interval) -> None:
    start = bucket_start(datetime.combine(day, time(), tzinfo=UTC), interval)
    assert bucket_day(day, interval) == start.date()


def test_naive_observed_at_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        bucket_start(datetime(2026, 1, 1), "day")


# --- accumulator ---------------------------------------------------------------------

T0 = utc(2026, 1, 1)
readings_strategy = st.lists(
    st.tuples(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
        st.integers(min_value=0, max_value=50).map(lambda h: T0 + timedelta(hours=h)),
        st.sampled_from(["a", "b", "c", "d"]),
    ),
    max_size=30,
)


def fold(readings: list[tuple[float, datetime, str]]) -> Accumulator:
    acc = Accumulator.empty()
    for value, at, key in readings:
        acc = acc.add(value, at, key)
    return acc


@given(readings_strategy, st.data())
def test_any_order_of_readings_gives_an_equal_accumulator(
    readings: list[tuple[float, datetime, str]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(readings))
    a, b = fold(readings), fold(shuffled)
    assert a == b
    for aggregation in AGGREGATIONS:
        assert a.value(aggregation) == b.value(aggregation)


@given(readings_strategy, st.integers(min_value=0, max_value=30))
def test_merging_split_folds_equals_one_fold(
    readings: list[tuple[float, datetime, str]], cut: int
) -> None:
    left, right = fold(readings[:cut]), fold(readings[cut:])
    assert left.merge(right) == fold(readings)
    assert right.merge(left) == fold(readings)


@given(st.lists(readings_strategy, max_size=6))
def test_running_folds_in_place_what_merges_give(
    groups: list[list[tuple[float, datetime, str]]],
) -> None:
    """Series folds a KPI's days with Running: after each merge, every aggregation equals
    the frozen accumulators' (empty groups included: a day with no readings)."""
    running, acc = Running(), Accumulator.empty()
    for group in groups:
        running.merge(fold(group))
        acc = acc.merge(fold(group))
        for aggregation in AGGREGATIONS:
            assert running.value(aggregation) == acc.value(aggregation)


@given(readings_strategy, readings_strategy, readings_strategy)
def test_merge_is_associative_and_commutative(
    x: list[tuple[float, datetime, str]],
    y: list[tuple[float, datetime, str]],
    z: list[tuple[float, datetime, str]],
) -> None:
    a, b, c = fold(x), fold(y), fold(z)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(b) == b.merge(a)
    assert a.merge(Accumulator.empty()) == a == Accumulator.empty().merge(a)


def test_float_sums_are_exact_so_order_cannot_change_them() -> None:
    # In float arithmetic (1e16 + 1) + 1 != 1e16 + (1 + 1); the exact total does not care.
    one_way = fold([(1e16, T0, "a"), (1.0, T0, "b"), (1.0, T0, "c")])
    other_way = fold([(1.0, T0, "b"), (1.0, T0, "c"), (1e16, T0, "a")])
    assert one_way == other_way
    assert one_way.exact_total == Fraction(10**16 + 2)
    assert one_way.value("sum") == 1e16 + 2
    assert fold([(0.1, T0, "a"), (0.2, T0, "b")]).value("sum") == 0.30000000000000004


def test_each_aggregation() -> None:
    acc = fold(
        [
            (4.0, utc(2026, 1, 2), "r1"),
            (10.0, utc(2026, 1, 1), "r2"),  # late arrival, observed earlier
            (8.0, utc(2026, 1, 3), "r3"),
            (-2.0, utc(2026, 1, 2, 12), "r4"),
        ]
    )
    assert acc.value("count") == 4.0
    assert acc.value("sum") == 20.0
    assert acc.value("avg") == 5.0
    assert acc.value("min") == -2.0
    assert acc.value("max") == 10.0
    assert acc.value("last") == 8.0  # greatest observed_at, not arrival order
    assert acc.total == 20.0
    assert acc.last_at == utc(2026, 1, 3)
    assert acc.last_key == "r3"


def test_last_breaks_observed_at_ties_by_key() -> None:
    a = fold([(1.0, T0, "r-b"), (2.0, T0, "r-a")])
    b = fold([(2.0, T0, "r-a"), (1.0, T0, "r-b")])
    assert a.value("last") == b.value("last") == 1.0  # "r-b" > "r-a"


def test_empty_accumulator_values() -> None:
    empty = Accumulator.empty()
    assert empty.value("count") == 0.0
    for aggregation in ["last", "sum", "avg", "min", "max"]:
        assert empty.value(aggregation) is None  # type: ignore[arg-type]
    assert aggregate([], "avg") is None
    assert aggregate([], "count") == 0.0


def test_aggregate_matches_worked_example_avg() -> None:
    assert aggregate([(8.0, utc(2026, 1, 5), "x"), (4.0, utc(2026, 1, 2), "y")], "avg") == 6.0


def test_negative_zero_does_not_make_min_order_dependent() -> None:
    a = fold([(-0.0, T0, "a"), (0.0, T0, "b")])
    b = fold([(0.0, T0, "b"), (-0.0, T0, "a")])
    assert str(a.value("min")) == str(b.value("min")) == "0.0"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Accumulator.empty().add(bad, T0, "k")


# --- status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "direction", "status"),
    [
        (None, "increase", "no_data"),
        (100.0, "increase", "green"),
        (100.5, "increase", "green"),
        (99.99, "increase", "amber"),
        (90.0, "increase", "amber"),
        (89.99, "increase", "red"),
        (None, "decrease", "no_data"),
        (100.0, "decrease", "green"),
        (99.5, "decrease", "green"),
        (100.01, "decrease", "amber"),
        (110.0, "decrease", "amber"),
        (110.01, "decrease", "red"),
    ],
)
def test_kpi_status_boundaries(value: float | None, direction: Direction, status: str) -> None:
    amber = 90.0 if direction == "increase" else 110.0
    assert kpi_status(value, direction, 100.0, amber) == status


def test_a_value_exactly_at_the_amber_threshold_is_amber() -> None:
    # (The default amber itself is contracts.http.default_amber, tested with the commands.)
    assert kpi_status(110.0, "decrease", 100.0, 110.0) == "amber"
    assert kpi_status(90.0, "increase", 100.0, 90.0) == "amber"


# --- staleness -----------------------------------------------------------------------

CREATED = utc(2026, 1, 1)


@pytest.mark.parametrize(
    ("interval", "span"),
    [("day", timedelta(hours=36)), ("week", timedelta(days=10.5)), ("month", timedelta(days=45))],
)
def test_stale_after_one_and_a_half_intervals_since_last_reading(
    interval: Interval, span: timedelta
) -> None:
    last = utc(2026, 1, 10)
    tick = timedelta(microseconds=1)
    assert not is_stale(last, CREATED, interval, last + span - tick)
    assert is_stale(last, CREATED, interval, last + span)
    assert is_stale(last, CREATED, interval, last + span + tick)


def test_stale_counts_from_creation_without_readings() -> None:
    assert not is_stale(None, CREATED, "day", CREATED + timedelta(hours=35))
    assert is_stale(None, CREATED, "day", CREATED + timedelta(hours=36))


def test_stale_factor_comes_from_the_policy() -> None:
    policy = ScoringPolicy(stale_factor=3.0)
    assert not is_stale(None, CREATED, "day", CREATED + timedelta(hours=71), policy)
    assert is_stale(None, CREATED, "day", CREATED + timedelta(hours=72), policy)


any_float = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(any_float, max_size=40))
def test_scaled_sum_is_the_exact_rational_sum(values: list[float]) -> None:
    exact = sum(map(Fraction, values), Fraction(0))
    total = scaled_sum(values)
    assert Fraction(total, 2**SCALE_BITS) == exact
    assert total == sum(scaled(v) for v in values)
    # The stored text is the reduced fraction (Fraction's own text) and reads back exactly.
    assert Fraction(total_text(total)) == exact
    assert parse_total(total_text(total)) == total
    assert parse_total(str(exact)) == total


@given(readings_strategy)
def test_of_values_equals_adding_one_by_one(readings: list[tuple[float, datetime, str]]) -> None:
    folded = fold(readings)
    if not readings:
        assert folded == Accumulator.empty()
        return
    last_at, last_key, last_value = max((t, k, v + 0.0) for v, t, k in readings)
    assert Accumulator.of_values([v for v, _, _ in readings], last_at, last_key, last_value) == (
        folded
    )


@given(st.lists(any_float, min_size=1, max_size=20))
def test_sum_and_avg_round_the_exact_value_once(values: list[float]) -> None:
    acc = fold([(v, T0, f"k{i}") for i, v in enumerate(values)])
    exact = sum(map(Fraction, values), Fraction(0))
    try:
        expected_sum: float | None = float(exact)
    except OverflowError:
        expected_sum = None
    if expected_sum is not None:
        assert acc.value("sum") == expected_sum == acc.total
    assert acc.value("avg") == float(exact / len(values))


# --- targets in force ----------------------------------------------------------------


def test_target_in_force_applies_from_its_instant_on_never_before() -> None:
    defined = KpiTarget(utc(2026, 1, 1), 100.0, 90.0)
    raised = KpiTarget(utc(2026, 3, 1), 120.0, 110.0)
    history = kpi_targets([defined, raised])
    assert target_in_force(history, utc(2025, 6, 1)) == defined  # before the definition too
    assert target_in_force(history, utc(2026, 2, 28, 23, 59, 59, 999_999)) == defined
    assert target_in_force(history, utc(2026, 3, 1)) == raised
    assert target_in_force(history, utc(2027, 1, 1)) == raised


def test_kpi_targets_sorts_back_dated_changes_and_keeps_stream_order_on_ties() -> None:
    defined = KpiTarget(utc(2026, 1, 1), 100.0, 90.0)
    late = KpiTarget(utc(2026, 5, 1), 130.0, 120.0)
    back_dated = KpiTarget(utc(2026, 2, 1), 110.0, 100.0)
    same_instant = KpiTarget(utc(2026, 5, 1), 140.0, 130.0)
    history = kpi_targets([defined, late, back_dated, same_instant])
    assert history == (defined, back_dated, late, same_instant)
    assert target_in_force(history, utc(2026, 3, 1)) == back_dated
    assert target_in_force(history, utc(2026, 6, 1)) == same_instant  # the later event wins
    assert kpi_targets([]) == ()
    with pytest.raises(ValueError, match="defining target"):
        target_in_force((), utc(2026, 1, 1))


@pytest.mark.parametrize(
    ("start", "interval", "now", "judged"),
    [
        (utc(2026, 3, 2), "day", utc(2026, 4, 1), utc(2026, 3, 2, 23, 59, 59, 999_999)),
        (utc(2026, 3, 2), "day", utc(2026, 3, 2, 12), utc(2026, 3, 2, 12)),  # still open
        (utc(2026, 3, 2), "week", utc(2026, 4, 1), utc(2026, 3, 8, 23, 59, 59, 999_999)),
        (utc(2026, 2, 1), "month", utc(2026, 4, 1), utc(2026, 2, 28, 23, 59, 59, 999_999)),
    ],
)
def test_bucket_judged_at_its_last_instant_or_now(
    start: datetime, interval: Interval, now: datetime, judged: datetime
) -> None:
    assert bucket_judged_at(start, interval, now) == judged


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.floats(1, 1e6), st.floats(0, 1e6)), min_size=1, max_size=8
    ),
    st.integers(0, 400),
    st.sampled_from(["day", "week", "month"]),
)
def test_a_retargeting_never_changes_a_bucket_that_ended_before_it(
    changes: list[tuple[int, float, float]], day: int, interval: Interval
) -> None:
    t0 = utc(2026, 1, 1)
    targets = [KpiTarget(t0 + timedelta(days=d), tgt, amb) for d, tgt, amb in changes]
    start = bucket_start(t0 + timedelta(days=day), interval)
    now = t0 + timedelta(days=800)
    at = bucket_judged_at(start, interval, now)
    before = target_in_force(kpi_targets(targets), at)
    # A change valid from the bucket's end on (or later) leaves its judgement alone.
    later = KpiTarget(bucket_end(start, interval), -1.0, -2.0)
    assert target_in_force(kpi_targets([*targets, later]), at) == before
    # A change valid within the bucket (or earlier) and after every other one decides it.
    within = KpiTarget(max(start, *(t.since for t in targets)), 7.0, 6.0)
    if within.since <= at:
        assert target_in_force(kpi_targets([*targets, within]), at) == within


def test_a_kpi_view_takes_a_retargeting_dated_a_little_ahead_at_once() -> None:
    """What the processor's KPI row and breach rule hold: the latest target by valid time,
    also one dated up to AHEAD ahead (commands may be); beyond, and in the past, the one in
    force. The view showed green against the old target while the processor raised red."""
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    targets = kpi_targets([
        KpiTarget(now - timedelta(days=30), 10.0, 5.0),
        KpiTarget(now + timedelta(minutes=3), 1000.0, 900.0),
    ])  # fmt: skip
    assert target_now(targets, now).target == 1000.0
    assert target_in_force(targets, now).target == 10.0
    assert target_now(targets, now - timedelta(minutes=3)).target == 10.0
    far = datetime.max.replace(tzinfo=UTC)
    assert target_now(targets, far).target == 1000.0, "no overflow at the end of time"

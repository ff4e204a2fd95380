"""projections.objective: the fold of an objective's events and its evaluation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events
from projections.kpi import Accumulator
from projections.objective import (
    BucketValue,
    Measurement,
    apply,
    evaluate,
    fold,
    measure,
    measure_many,
)
from projections.periods import Period
from tests.unit.processor.builders import T0, Log, worked_example

AT = datetime(2026, 2, 15, tzinfo=UTC)
PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}


def _objective_events(log: Log) -> list[events.Event]:
    return [e for _, e in log.entries if e.type.startswith(("objective.", "key_result."))]


def test_worked_example_scores_065_on_track() -> None:
    log = Log()
    ids = worked_example(log)
    state = fold(_objective_events(log))
    assert state is not None
    days = [
        (date(2026, 1, 20), Accumulator.of(4.0, datetime(2026, 1, 20, tzinfo=UTC), "r1")),
        (date(2026, 2, 3), Accumulator.of(8.0, datetime(2026, 2, 3, tzinfo=UTC), "r2")),
    ]
    m = {str(ids["kr_c"]): measure(days, "avg", "day", state.period, AT)}
    score, krs = evaluate(state, m, AT)
    assert score.score == pytest.approx(0.65)
    assert krs[str(ids["kr_a"])].score == pytest.approx(0.4)
    assert krs[str(ids["kr_b"])].score == 1.0
    assert krs[str(ids["kr_c"])].current == 6.0
    assert score.expected == 0.5
    assert score.health == pytest.approx(1.3)
    assert (score.status, score.forecast, score.zone) == ("on_track", 1.0, "commit")


def test_measure_counts_only_readings_inside_the_period_up_to_at() -> None:
    period = Period(date(2026, 1, 1), date(2026, 1, 31))
    days = [
        (date(2025, 12, 31), Accumulator.of(100.0, datetime(2025, 12, 31, tzinfo=UTC), "a")),
        (date(2026, 1, 5), Accumulator.of(2.0, datetime(2026, 1, 5, tzinfo=UTC), "b")),
        (date(2026, 1, 20), Accumulator.of(4.0, datetime(2026, 1, 20, tzinfo=UTC), "c")),
        (date(2026, 2, 1), Accumulator.of(100.0, datetime(2026, 2, 1, tzinfo=UTC), "d")),
    ]
    assert measure(days, "sum", "week", period, datetime(2026, 1, 10, tzinfo=UTC)).current == 2.0
    later = measure(days, "sum", "week", period, datetime(2026, 3, 1, tzinfo=UTC))
    # Weeks of Jan 5 and Jan 19, each judged at its last instant.
    week_ends = (datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 26, tzinfo=UTC))
    tick = timedelta(microseconds=1)
    assert later == Measurement(
        6.0, tuple(BucketValue(t - tick, v) for t, v in zip(week_ends, (2.0, 4.0), strict=True))
    )


def test_target_change_does_not_rewrite_the_past() -> None:
    log = Log()
    o, kr = uuid4(), uuid4()
    log.emit("objective.drafted", o, title="T", owner="ana", level="team", period=PERIOD)
    log.emit("key_result.added", o, kr_id=kr, title="K", kind="metric", start=0.0, target=10.0)
    log.emit("key_result.checked_in", o, kr_id=kr, value=5.0)
    log.emit("key_result.retargeted", o, at=T0 + timedelta(days=10), kr_id=kr, target=20.0)
    state = fold(_objective_events(log))
    assert state is not None
    before, _ = evaluate(state, {}, T0 + timedelta(days=5))
    after, _ = evaluate(state, {}, T0 + timedelta(days=11))
    assert (before.score, after.score) == (0.5, 0.25)


def test_decreasing_target_and_maintain_from_checkins() -> None:
    log = Log()
    o, a, b = uuid4(), uuid4(), uuid4()
    log.emit("objective.drafted", o, title="T", owner="ana", level="team", period=PERIOD)
    log.emit("key_result.added", o, kr_id=a, title="A", kind="metric", start=100.0, target=50.0)
    log.emit(
        "key_result.added", o, kr_id=b, title="B", kind="maintain", target=3.0,
        comparison="at_most",
    )  # fmt: skip
    log.emit("key_result.checked_in", o, kr_id=a, value=25.0)
    for v in (1.0, 5.0, 2.0, 3.0):
        log.emit("key_result.checked_in", o, kr_id=b, value=v)
    state = fold(_objective_events(log))
    assert state is not None
    score, krs = evaluate(state, {}, AT)
    assert krs[str(a)].progress == 1.5
    assert krs[str(a)].score == 1.0
    assert krs[str(b)].score == 0.75
    assert score.score == pytest.approx(0.875)


def test_a_retargeting_accepted_a_little_ahead_is_in_force_at_once() -> None:
    """Commands may be dated up to 5 minutes ahead. A check-in so dated counted at once; a
    retargeting was ignored until the objective's next event, however long that took (the
    tick does not re-score): 0.5 for a day where 1.0 was due. A closed objective's final
    score still uses the target in force at its close."""
    log = Log()
    o, kr = uuid4(), uuid4()
    log.emit("objective.drafted", o, title="T", owner="ana", level="team", period=PERIOD)
    log.emit("key_result.added", o, kr_id=kr, title="K", kind="metric", start=0.0, target=100.0)
    log.emit("key_result.checked_in", o, kr_id=kr, value=50.0)
    log.emit("key_result.retargeted", o, at=AT + timedelta(minutes=3), kr_id=kr, target=50.0)
    state = fold(_objective_events(log))
    assert state is not None
    score, krs = evaluate(state, {}, AT)
    assert (score.score, score.status, krs[str(kr)].score) == (1.0, "achieved", 1.0)
    log.emit("objective.closed", o, at=AT - timedelta(minutes=1))
    closed = fold(_objective_events(log))
    assert closed is not None
    final, _ = evaluate(closed, {}, AT - timedelta(minutes=1))
    assert final.score == 0.5


def test_a_promoted_key_result_keeps_its_check_ins_until_its_kpi_has_data() -> None:
    """Promoting a reached key result made it fall to its start (0.6 -> 0, with a history
    row nobody caused): the new KPI had no readings yet. Until it has some, the check-ins
    stay in force; its first reading takes over."""
    log = Log()
    o, metric, maintain, kpi = uuid4(), uuid4(), uuid4(), uuid4()
    log.emit("objective.drafted", o, title="T", owner="ana", level="team", period=PERIOD)
    log.emit("key_result.added", o, kr_id=metric, title="M", kind="metric", start=0.0,
             target=100.0)  # fmt: skip
    log.emit("key_result.added", o, kr_id=maintain, title="U", kind="maintain", target=99.0,
             comparison="at_least")  # fmt: skip
    log.emit("key_result.checked_in", o, kr_id=metric, value=60.0)
    for v in (99.5, 98.0, 99.9, 99.0):
        log.emit("key_result.checked_in", o, kr_id=maintain, value=v)
    state = fold(_objective_events(log))
    assert state is not None
    before, _ = evaluate(state, {}, AT)
    for kr in (metric, maintain):
        log.emit("key_result.promoted", o, at=AT - timedelta(days=1), kr_id=kr, kpi_id=kpi)
    state = fold(_objective_events(log))
    assert state is not None
    assert all(kr.kpi_id == str(kpi) for kr in state.key_results)
    no_data = measure([], "last", "day", state.period, AT)
    assert no_data.current is None
    after, krs = evaluate(state, {str(metric): no_data, str(maintain): no_data}, AT)
    assert (krs[str(metric)].current, krs[str(metric)].score) == (60.0, 0.6)
    assert krs[str(maintain)].score == 0.75
    assert after.score == before.score == pytest.approx(0.675)
    reading = [(date(2026, 2, 14), Accumulator.of(80.0, AT - timedelta(days=1), "r"))]
    measured = measure(reading, "last", "day", state.period, AT)
    _, krs = evaluate(state, {str(metric): measured, str(maintain): measured}, AT)
    assert krs[str(metric)].current == 80.0
    assert krs[str(maintain)].score == 0.0, "the KPI's one bucket (80) misses 99"


# -- properties -----------------------------------------------------------------------------

KRS = [UUID(int=i) for i in range(1, 4)]
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
days_in = st.integers(min_value=0, max_value=120)


@st.composite
def objective_histories(draw: st.DrawFn) -> list[events.Event]:
    log = Log()
    o = UUID(int=99)
    log.emit("objective.drafted", o, title="T", owner="ana", level="team", period=PERIOD)
    added: list[UUID] = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        at = T0 + timedelta(days=draw(days_in))
        choice = draw(
            st.sampled_from(["add", "checkin", "retarget", "reweight", "remove", "close"])
        )
        if choice == "add" or not added:
            kr = KRS[len(added) % len(KRS)]
            if kr in added:
                continue
            kind = draw(st.sampled_from(["metric", "milestone", "maintain"]))
            extra: dict[str, object] = {}
            if kind == "metric":
                extra = {"start": draw(values), "target": draw(values)}
            elif kind == "maintain":
                extra = {"target": draw(values), "comparison": "at_least"}
            log.emit("key_result.added", o, at=at, kr_id=kr, title="K", kind=kind, **extra)
            added.append(kr)
        elif choice == "checkin":
            kr = draw(st.sampled_from(added))
            log.emit(
                "key_result.checked_in", o, at=at, kr_id=kr, value=draw(values),
                done=draw(st.booleans()),
            )  # fmt: skip
        elif choice == "retarget":
            log.emit(
                "key_result.retargeted",
                o,
                at=at,
                kr_id=draw(st.sampled_from(added)),
                target=draw(values),
            )
        elif choice == "reweight":
            weight = draw(st.floats(min_value=0.1, max_value=10))
            log.emit(
                "key_result.reweighted", o, at=at, kr_id=draw(st.sampled_from(added)), weight=weight
            )
        elif choice == "remove":
            log.emit("key_result.removed", o, at=at, kr_id=draw(st.sampled_from(added)))
        else:
            log.emit("objective.closed", o, at=at)
    return [e for _, e in log.entries]


@settings(max_examples=150, deadline=None)
@given(objective_histories(), st.integers(min_value=0, max_value=150))
def test_fold_properties(history: list[events.Event], day: int) -> None:
    at = T0 + timedelta(days=day)
    state = fold(history)
    assert state is not None
    # Deterministic, and applying any event a second time changes nothing.
    assert fold(history) == state
    for e in history:
        assert apply(state, e) is state
    redelivered = fold([x for e in history for x in (e, e)])
    assert redelivered == state
    score, krs = evaluate(state, {}, at)
    assert 0.0 <= score.score <= 1.0
    assert all(0.0 <= k.score <= 1.0 and k.progress >= 0.0 for k in krs.values())


@settings(max_examples=100, deadline=None)
@given(objective_histories(), st.integers(min_value=0, max_value=150))
def test_events_after_at_do_not_change_targets_in_force(
    history: list[events.Event], day: int
) -> None:
    at = T0 + timedelta(days=day)
    state = fold(history)
    assert state is not None
    for kr in state.key_results:
        force = kr.in_force(at)
        later = [t for t in kr.targets[1:] if t.since > at]
        assert all(force is not t for t in later)


day_readings = st.lists(
    st.tuples(
        st.integers(min_value=-10, max_value=120),  # day offset from 2026-01-01
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(
    day_readings,
    st.sampled_from(["last", "sum", "avg", "min", "max", "count"]),
    st.sampled_from(["day", "week", "month"]),
    st.lists(st.integers(min_value=-20, max_value=130), min_size=1, max_size=8),
)
def test_measure_many_equals_measure_for_each_instant(
    readings: list[tuple[int, float]], aggregation: Any, interval: Any, offsets: list[int]
) -> None:
    period = Period(date(2026, 1, 1), date(2026, 3, 31))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    days: dict[date, Accumulator] = {}
    for i, (offset, value) in enumerate(readings):
        at = start + timedelta(days=offset, hours=i % 24)
        days[at.date()] = days.get(at.date(), Accumulator.empty()).add(value, at, f"r{i}")
    ats = [start + timedelta(days=o, hours=7) for o in offsets]
    many = measure_many(days.items(), aggregation, interval, period, ats)
    assert many == [measure(days.items(), aggregation, interval, period, at) for at in ats]

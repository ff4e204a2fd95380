"""What a key result counts at an instant `at` (API.md "Scoring policy v1").

Target changes never rewrite the past: each maintain observation (a check-in, or a KPI
bucket) is judged against the target in force at its own time. And the current value and
`done` at `at` come from the check-ins that occurred by `at`, for every kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid5

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events
from projections.kpi import Accumulator
from projections.objective import (
    ObjectiveState,
    evaluate,
    fold,
    key_result_input,
    latest_done,
    measure,
    measure_many,
)

NS = UUID(int=77)
OBJ = UUID(int=100)
METRIC, MILESTONE, MAINTAIN = UUID(int=1), UUID(int=2), UUID(int=3)
KPI = UUID(int=9)
Q1 = {"start": "2026-01-01", "end": "2026-03-31"}
JAN1 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    """`n` days after 2026-01-01 00:00Z."""
    return JAN1 + timedelta(days=n)


@dataclass
class Stream:
    """One objective's events, numbered in stream order."""

    found: list[events.Event] = field(default_factory=list)

    def emit(self, type_name: str, at: datetime, **payload: Any) -> Stream:
        version = len(self.found) + 1
        self.found.append(
            events.EVENT_TYPES[type_name].model_validate(
                {
                    "event_id": uuid5(NS, f"{OBJ}:{version}"),
                    "org_id": "acme",
                    "stream_id": OBJ,
                    "stream_version": version,
                    "occurred_at": at,
                    "recorded_at": at,
                    **payload,
                }
            )
        )
        return self

    def check_in(self, kr: UUID, at: datetime, **payload: Any) -> Stream:
        return self.emit("key_result.checked_in", at, kr_id=kr, **payload)

    def state(self) -> ObjectiveState:
        state = fold(self.found)
        assert state is not None
        return state


def maintain_stream(target: float, comparison: str = "at_least", **extra: Any) -> Stream:
    return (
        Stream()
        .emit("objective.drafted", JAN1, title="O", owner="ana", level="team", period=Q1)
        .emit(
            "key_result.added", JAN1, kr_id=MAINTAIN, title="M", kind="maintain",
            target=target, comparison=comparison, **extra,
        )
    )  # fmt: skip


def maintain_score(state: ObjectiveState, at: datetime, **measurements: Any) -> float:
    return evaluate(state, measurements, at)[1][str(MAINTAIN)].score


# -- 3. a retargeting does not judge earlier observations again ----------------------------


def test_a_retarget_does_not_rejudge_earlier_check_ins() -> None:
    """Reviewer's case: at_least 100, four January check-ins of 90 score 0; a retarget to
    80 from Feb 1 leaves them failing, and only February's check-ins meet 80."""
    s = maintain_stream(100.0)
    for week in range(4):
        s.check_in(MAINTAIN, day(7 * week + 1), value=90.0)
    assert maintain_score(s.state(), day(28)) == 0.0
    s.emit("key_result.retargeted", datetime(2026, 2, 1, tzinfo=UTC), kr_id=MAINTAIN, target=80.0)
    assert maintain_score(s.state(), datetime(2026, 2, 2, tzinfo=UTC)) == 0.0
    assert maintain_score(s.state(), day(28)) == 0.0  # as of January: nothing changed
    for week in range(4):
        s.check_in(
            MAINTAIN, datetime(2026, 2, 2, tzinfo=UTC) + timedelta(days=7 * week), value=90.0
        )
    assert maintain_score(s.state(), datetime(2026, 3, 1, tzinfo=UTC)) == 0.5
    # The input says which target judged each observation; `target` is today's.
    state = s.state()
    kr = state.key_result(str(MAINTAIN))
    assert kr is not None
    scored = key_result_input(state, kr, None, datetime(2026, 3, 1, tzinfo=UTC))
    assert scored.target == 80.0
    assert [o.target for o in scored.observations] == [100.0] * 4 + [80.0] * 4


def test_a_retarget_backdated_before_check_ins_judges_them_by_the_new_target() -> None:
    s = maintain_stream(5.0, "at_most")
    s.check_in(MAINTAIN, day(10), value=7.0).check_in(MAINTAIN, day(20), value=7.0)
    # Recorded later, valid from day 15: the day-20 check-in was made under target 8.
    s.emit("key_result.retargeted", day(15), kr_id=MAINTAIN, target=8.0)
    assert maintain_score(s.state(), day(30)) == 0.5


def _daily(values: dict[int, float]) -> list[tuple[date, Accumulator]]:
    """Day accumulators of one reading per listed day (days after Jan 1)."""
    return [
        (day(n).date(), Accumulator.of(v, day(n) + timedelta(hours=12), f"r{n}"))
        for n, v in sorted(values.items())
    ]


def test_kpi_buckets_keep_the_target_in_force_when_they_ended() -> None:
    """Weekly buckets (ISO weeks: Jan 5, 12, 19, ...) of a KPI-linked maintain KR: a week
    that ended before the retargeting keeps the old target, the week it falls in and
    later ones take the new one, the open week the one in force at `at`."""
    s = maintain_stream(100.0, kpi_id=KPI, aggregation="last")
    s.emit("key_result.retargeted", day(15), kr_id=MAINTAIN, target=80.0)  # Fri Jan 16
    state = s.state()
    days = _daily({5: 90.0, 12: 90.0, 19: 90.0})  # weeks of Jan 5, 12 and 19
    period = state.period

    def score(at: datetime) -> float:
        m = measure(days, "last", "week", period, at)
        assert [m] == measure_many(days, "last", "week", period, [at])
        return maintain_score(state, at, **{str(MAINTAIN): m})

    assert score(day(13)) == 0.0  # week of Jan 12 open, judged at `at` under 100
    assert score(day(16)) == 0.5  # ... and at `at` under 80 once retargeted
    assert score(day(30)) == 2 / 3  # the week of Jan 5 ended under 100; the others under 80
    assert score(day(80)) == 2 / 3


def test_a_bucket_across_the_period_end_is_judged_at_the_period_end() -> None:
    """Period ends Tue Mar 31; its last week runs to Sun Apr 5. Readings after the period
    are not in the bucket's value, so a retarget on Apr 2 is not its target."""
    s = maintain_stream(100.0, kpi_id=KPI, aggregation="last")
    s.emit("key_result.retargeted", datetime(2026, 4, 2, tzinfo=UTC), kr_id=MAINTAIN, target=80.0)
    state = s.state()
    days = _daily({88: 90.0})  # Mon Mar 30
    at = datetime(2026, 4, 10, tzinfo=UTC)
    m = measure(days, "last", "week", state.period, at)
    assert [b.judged_at for b in m.observations] == [
        state.period.ends_at - timedelta(microseconds=1)
    ]
    assert maintain_score(state, at, **{str(MAINTAIN): m}) == 0.0


# -- 5. check-ins after `at` do not count at `at` ------------------------------------------


def three_krs() -> Stream:
    return (
        Stream()
        .emit("objective.drafted", JAN1, title="O", owner="ana", level="team", period=Q1)
        .emit(
            "key_result.added", JAN1, kr_id=METRIC, title="A", kind="metric", start=0.0,
            target=10.0,
        )
        .emit("key_result.added", JAN1, kr_id=MILESTONE, title="B", kind="milestone")
        .emit(
            "key_result.added", JAN1, kr_id=MAINTAIN, title="C", kind="maintain", target=5.0,
            comparison="at_least",
        )
    )  # fmt: skip


def test_a_backdated_close_counts_only_check_ins_made_by_the_close() -> None:
    """Reviewer's case: closed as of Mar 20, with check-ins on Mar 30 recorded before the
    close: the final score counts Mar 10's for every kind (metric 3/10, maintain 0)."""
    s = three_krs()
    s.check_in(METRIC, day(68), value=3.0).check_in(MAINTAIN, day(68), value=1.0)
    s.check_in(MILESTONE, day(68), done=False)
    s.check_in(METRIC, day(88), value=10.0).check_in(MAINTAIN, day(88), value=9.0)
    s.check_in(MILESTONE, day(88), done=True)
    s.emit("objective.closed", day(78))
    state = s.state()
    assert state.closed_at == day(78)
    score, krs = evaluate(state, {}, day(78))
    assert (krs[str(METRIC)].current, krs[str(METRIC)].score) == (3.0, 0.3)
    assert krs[str(MILESTONE)].score == 0.0
    assert krs[str(MAINTAIN)].score == 0.0
    assert score.score == pytest.approx(0.1)
    assert latest_done(state, str(MILESTONE), day(78)) is False
    assert latest_done(state, str(MILESTONE)) is True
    # After the Mar 30 check-ins all of them count: 1, 1 and one maintain check-in of two.
    assert evaluate(state, {}, day(89))[0].score == pytest.approx(2.5 / 3)


# -- properties ----------------------------------------------------------------------------

# Few distinct values and targets, so a retargeting often flips whether one meets.
VALUE = st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0])
HOUR = st.integers(min_value=0, max_value=100 * 24)
Kind = Literal["metric", "milestone", "maintain"]
KR_OF: dict[Kind, UUID] = {"metric": METRIC, "milestone": MILESTONE, "maintain": MAINTAIN}


@st.composite
def check_ins(draw: st.DrawFn) -> list[tuple[Kind, int, float, bool]]:
    kinds = st.sampled_from(list(KR_OF))
    return draw(st.lists(st.tuples(kinds, HOUR, VALUE, st.booleans()), max_size=12))


def _with_check_ins(s: Stream, found: list[tuple[Kind, int, float, bool]]) -> Stream:
    for kind, hour, value, done in found:
        at = JAN1 + timedelta(hours=hour)
        if kind == "milestone":
            s.check_in(KR_OF[kind], at, done=done)
        else:
            s.check_in(KR_OF[kind], at, value=value)
    return s


@settings(max_examples=200, deadline=None)
@given(check_ins(), HOUR, st.sampled_from(list(KR_OF)), st.integers(1, 500), VALUE, st.booleans())
def test_a_check_in_dated_after_a_close_changes_nothing_at_the_close(
    found: list[tuple[Kind, int, float, bool]],
    at_hour: int,
    kind: Kind,
    later_by: int,
    value: float,
    done: bool,
) -> None:
    """A closed objective's score is final at its close (a backdated close, with check-ins
    recorded before it but dated after it); an active one counts every check-in, as one
    accepted a little ahead of now would otherwise never count."""
    at = JAN1 + timedelta(hours=at_hour)

    def closed_at(events: list[tuple[Kind, int, float, bool]]) -> ObjectiveState:
        return _with_check_ins(three_krs(), events).emit("objective.closed", at).state()

    before = evaluate(closed_at(found), {}, at)
    later = [*found, (kind, at_hour + later_by, value, done)]
    assert evaluate(closed_at(later), {}, at) == before


def test_an_active_objective_counts_a_check_in_accepted_a_little_ahead() -> None:
    """Commands accept occurred_at up to 5 minutes ahead of now, and an active objective is
    evaluated now: such a check-in counts at once (no later evaluation would count it)."""
    now = JAN1 + timedelta(days=10)
    state = three_krs().check_in(METRIC, now + timedelta(minutes=4), value=7.0).state()
    metric = next(kr for kr in state.key_results if kr.id == str(METRIC))
    assert key_result_input(state, metric, None, now).current == 7.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(HOUR, VALUE), max_size=10),
    st.sampled_from(["at_least", "at_most"]),
    VALUE,
    VALUE,
    st.integers(min_value=1, max_value=50 * 24),
    st.integers(min_value=0, max_value=50 * 24),
)
def test_a_retarget_after_every_check_in_changes_no_maintain_score(
    found: list[tuple[int, float]],
    comparison: str,
    target: float,
    new_target: float,
    after_last: int,
    at_after: int,
) -> None:
    """A retargeting that takes effect after the last check-in (and before or after `at`)
    leaves the maintain score at `at` as it was."""
    s = maintain_stream(target, comparison)
    for hour, value in found:
        s.check_in(MAINTAIN, JAN1 + timedelta(hours=hour), value=value)
    since = JAN1 + timedelta(hours=max((h for h, _ in found), default=0) + after_last)
    at = since - timedelta(hours=after_last) + timedelta(hours=at_after)
    before = maintain_score(s.state(), at)
    s.emit("key_result.retargeted", since, kr_id=MAINTAIN, target=new_target)
    assert maintain_score(s.state(), at) == before


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.integers(min_value=0, max_value=89), VALUE, max_size=20),
    st.sampled_from(["day", "week", "month"]),
    st.sampled_from(["last", "sum", "avg", "min", "max", "count"]),
    VALUE,
    VALUE,
    st.integers(min_value=1, max_value=60 * 24 * 60),
    st.integers(min_value=0, max_value=120 * 24),
)
def test_a_retarget_after_every_bucket_changes_no_maintain_score(
    values: dict[int, float],
    interval: Any,
    aggregation: Any,
    target: float,
    new_target: float,
    after_minutes: int,
    at_hour: int,
) -> None:
    """A KPI-linked maintain KR: a retargeting that takes effect after every bucket of the
    measurement at `at` was judged (it ended, or `at` for an open one) changes nothing."""
    s = maintain_stream(target, kpi_id=KPI, aggregation=aggregation)
    state = s.state()
    at = JAN1 + timedelta(hours=at_hour)
    days = _daily(values)
    [m] = measure_many(days, aggregation, interval, state.period, [at])
    assert m == measure(days, aggregation, interval, state.period, at)
    last = max((b.judged_at for b in m.observations), default=JAN1)
    before = maintain_score(state, at, **{str(MAINTAIN): m})
    since = last + timedelta(minutes=after_minutes)
    s.emit("key_result.retargeted", since, kr_id=MAINTAIN, target=new_target)
    assert maintain_score(s.state(), at, **{str(MAINTAIN): m}) == before

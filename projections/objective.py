"""An objective's state as a pure fold of its goal events, and its evaluation at an instant.

`apply(state, event)` folds one event of the objective's stream (dispatched per event
type); `evaluate(state, measurements, at, policy)` scores the state at `at`. The processor
and the query API's `as_of` / `known_at` reads call exactly these functions.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar

import events
from projections.kpi import (
    AHEAD,
    Accumulator,
    Aggregation,
    Interval,
    Running,
    bucket_day,
    bucket_judged_at,
    bucket_start,
)
from projections.periods import Period, as_utc
from projections.policy import DEFAULT_POLICY, ScoringPolicy
from projections.scoring import (
    Comparison,
    KeyResultInput,
    KeyResultKind,
    KeyResultScore,
    ObjectiveScore,
    Observation,
    score_key_result,
    score_objective,
)

ObjectiveLifecycle = Literal["active", "closed", "archived"]


@dataclass(frozen=True, slots=True)
class TargetInForce:
    """Start and target of a key result from `since` (the retargeting's occurred_at) on."""

    since: datetime
    start: float | None
    target: float | None


@dataclass(frozen=True, slots=True)
class CheckIn:
    """One check-in of a key result (`version` = its stream_version, breaks ties)."""

    event_id: str
    kr_id: str
    value: float | None
    done: bool | None
    confidence: float | None
    note: str | None
    occurred_at: datetime
    recorded_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class KeyResultState:
    """A key result as its events left it. `targets`: every start/target ever in force,
    oldest first; the first applies to all time before the next one."""

    id: str
    ordinal: int
    title: str
    kind: KeyResultKind
    unit: str | None
    comparison: Comparison | None
    weight: float
    kpi_id: str | None
    aggregation: Aggregation | None
    targets: tuple[TargetInForce, ...]
    removed: bool
    added_at: datetime
    updated_at: datetime

    @property
    def start(self) -> float | None:
        """The latest start (the one in force from the last retargeting on)."""
        return self.targets[-1].start

    @property
    def target(self) -> float | None:
        """The latest target."""
        return self.targets[-1].target

    def in_force(self, at: datetime) -> TargetInForce:
        """The start/target in force at `at`: the latest change with since <= at, else the
        first (a target change never applies to the time before it)."""
        chosen = self.targets[0]
        for t in self.targets[1:]:
            if t.since <= at:
                chosen = t
        return chosen


@dataclass(frozen=True, slots=True)
class ObjectiveState:
    """An objective's state after the events up to `version` of its stream (of those up to
    `version` that a time-travel cut keeps, for `fold_cut`)."""

    id: str
    org_id: str
    title: str
    description: str | None
    owner: str
    level: str
    parent_id: str | None
    period: Period
    state: ObjectiveLifecycle
    version: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    key_results: tuple[KeyResultState, ...]
    checkins: tuple[CheckIn, ...]
    # When the close was recorded (knowledge time): its final score counts the readings
    # recorded by then. A close imported with an earlier occurred_at counts the readings
    # recorded before it was; only those recorded after the close do not.
    closed_known_at: datetime | None = None

    @property
    def final_cut(self) -> tuple[datetime, datetime] | None:
        """(valid time, knowledge time) of a final score: the close, and when the close was
        recorded. None while the objective is active or was never closed (archived from
        active): it is evaluated now, with everything known."""
        if self.closed_at is None or self.state == "active":
            return None
        return self.closed_at, self.closed_known_at or self.closed_at

    def key_result(self, kr_id: str) -> KeyResultState | None:
        """The key result `kr_id` (removed ones included), or None."""
        for kr in self.key_results:
            if kr.id == kr_id:
                return kr
        return None

    @property
    def active_key_results(self) -> tuple[KeyResultState, ...]:
        """Key results not removed, in the order they were added."""
        return tuple(kr for kr in self.key_results if not kr.removed)


class NotThisObjectiveError(ValueError):
    """The event does not belong to an objective stream (or precedes its drafting)."""


E = TypeVar("E", bound=events.Event)
Handler = Callable[[ObjectiveState | None, Any], ObjectiveState]
_HANDLERS: dict[str, Handler] = {}


def _handles(cls: type[E]) -> Callable[[Callable[[ObjectiveState | None, E], ObjectiveState]], Any]:
    def register(fn: Callable[[ObjectiveState | None, E], ObjectiveState]) -> Any:
        _HANDLERS[cls.type_name()] = fn
        return fn

    return register


def handled_types() -> frozenset[str]:
    """Event types `apply` folds (the objective stream's types)."""
    return frozenset(_HANDLERS)


def apply(state: ObjectiveState | None, event: events.Event) -> ObjectiveState:
    """Fold one event of the objective's stream into its state.

    Idempotent: an event whose stream_version is not above `state.version` returns `state`
    unchanged, so redelivered and replayed events change nothing. An event beyond the next
    version (a gap: the broker lost records and the relay is republishing from the start)
    also returns `state` unchanged: it is applied when it comes again, in order.
    """
    if state is not None and event.stream_version != state.version + 1:
        return state
    return _handle(state, event)


def _handle(state: ObjectiveState | None, event: events.Event) -> ObjectiveState:
    handler = _HANDLERS.get(event.type)
    if handler is None:
        raise NotThisObjectiveError(f"{event.type} is not an objective event")
    return handler(state, event)


def fold(events_in_order: Iterable[events.Event]) -> ObjectiveState | None:
    """The state after folding the events (in stream order) from nothing."""
    state: ObjectiveState | None = None
    for event in events_in_order:
        state = apply(state, event)
    return state


def fold_cut(cut: Iterable[events.Event]) -> ObjectiveState | None:
    """The state from a cut of the stream: the events, in stream order, that a time-travel
    read keeps (occurred_at <= as_of for valid time, recorded_at <= known_at for knowledge
    time).

    A cut may skip versions where `fold` would wait for a lost record: history imports
    backdate occurred_at, so a check-in recorded after another can have occurred before
    it, and a cut between the two instants keeps the later version only. Every event of
    the cut counts, applied in stream order as the processor applies the whole stream (so
    the cut of all events gives the live state). `version` is then the greatest
    stream_version of the cut: the newest event the state reflects, not a count of
    events. None when the drafting is not in the cut (the objective did not exist yet);
    an event not above the version already applied is a repeat and changes nothing.
    """
    state: ObjectiveState | None = None
    for event in cut:
        if state is None and not isinstance(event, events.ObjectiveDrafted):
            continue
        if state is not None and event.stream_version <= state.version:
            continue
        state = _handle(state, event)
    return state


SNAPSHOT_FORMAT = 2  # raise when from_snapshot can no longer read what it could before


def from_snapshot(data: Mapping[str, Any]) -> ObjectiveState:
    """The state whose JSON form is `data`: the dataclasses as objects of their fields,
    datetimes and dates in ISO 8601 (what orjson.dumps(state) gives). Equal to the state
    that was dumped, so a stored snapshot can stand in for folding the stream again."""
    dt = datetime.fromisoformat
    key_results = tuple(
        KeyResultState(
            **{
                **kr,
                "targets": tuple(
                    TargetInForce(dt(t["since"]), t["start"], t["target"]) for t in kr["targets"]
                ),
                "added_at": dt(kr["added_at"]),
                "updated_at": dt(kr["updated_at"]),
            }
        )
        for kr in data["key_results"]
    )
    checkins = tuple(
        CheckIn(**{**c, "occurred_at": dt(c["occurred_at"]), "recorded_at": dt(c["recorded_at"])})
        for c in data["checkins"]
    )
    start, end = data["period"]["start"], data["period"]["end"]
    closed_at, closed_known_at = data["closed_at"], data["closed_known_at"]
    return ObjectiveState(
        **{
            **data,
            "period": Period(date.fromisoformat(start), date.fromisoformat(end)),
            "created_at": dt(data["created_at"]),
            "updated_at": dt(data["updated_at"]),
            "closed_at": None if closed_at is None else dt(closed_at),
            "closed_known_at": None if closed_known_at is None else dt(closed_known_at),
            "key_results": key_results,
            "checkins": checkins,
        }
    )


def _existing(state: ObjectiveState | None, event: events.Event) -> ObjectiveState:
    if state is None:
        raise NotThisObjectiveError(f"{event.type} before objective.drafted")
    return state


def _touch(current: ObjectiveState, event: events.Event, **changes: Any) -> ObjectiveState:
    # updated_at is the latest valid time of a change: a backdated event (a check-in entered
    # late) is a change, but not a later one.
    updated_at = max(current.updated_at, event.occurred_at)
    return replace(current, version=event.stream_version, updated_at=updated_at, **changes)


def _period(p: events.Period) -> Period:
    return Period(p.start, p.end)


def _with_kr(
    state: ObjectiveState, event: events.Event, kr_id: str, **changes: Any
) -> ObjectiveState:
    krs = tuple(
        replace(kr, updated_at=max(kr.updated_at, event.occurred_at), **changes)
        if kr.id == kr_id
        else kr
        for kr in state.key_results
    )
    return _touch(state, event, key_results=krs)


@_handles(events.ObjectiveDrafted)
def _drafted(state: ObjectiveState | None, e: events.ObjectiveDrafted) -> ObjectiveState:
    if state is not None:
        return state
    return ObjectiveState(
        id=str(e.stream_id),
        org_id=e.org_id,
        title=e.title,
        description=e.description,
        owner=e.owner,
        level=e.level,
        parent_id=None if e.parent_id is None else str(e.parent_id),
        period=_period(e.period),
        state="active",
        version=e.stream_version,
        created_at=e.occurred_at,
        updated_at=e.occurred_at,
        closed_at=None,
        key_results=(),
        checkins=(),
    )


@_handles(events.ObjectiveRevised)
def _revised(state: ObjectiveState | None, e: events.ObjectiveRevised) -> ObjectiveState:
    s = _existing(state, e)
    return _touch(
        s,
        e,
        title=s.title if e.title is None else e.title,
        description=s.description if e.description is None else e.description or None,
        owner=s.owner if e.owner is None else e.owner,
    )


@_handles(events.ObjectiveRealigned)
def _realigned(state: ObjectiveState | None, e: events.ObjectiveRealigned) -> ObjectiveState:
    parent = None if e.parent_id is None else str(e.parent_id)
    return _touch(_existing(state, e), e, parent_id=parent)


@_handles(events.ObjectiveRescheduled)
def _rescheduled(state: ObjectiveState | None, e: events.ObjectiveRescheduled) -> ObjectiveState:
    return _touch(_existing(state, e), e, period=_period(e.period))


@_handles(events.ObjectiveClosed)
def _closed(state: ObjectiveState | None, e: events.ObjectiveClosed) -> ObjectiveState:
    return _touch(
        _existing(state, e),
        e,
        state="closed",
        closed_at=e.occurred_at,
        closed_known_at=e.recorded_at,
    )


@_handles(events.ObjectiveReopened)
def _reopened(state: ObjectiveState | None, e: events.ObjectiveReopened) -> ObjectiveState:
    return _touch(_existing(state, e), e, state="active", closed_at=None, closed_known_at=None)


@_handles(events.ObjectiveArchived)
def _archived(state: ObjectiveState | None, e: events.ObjectiveArchived) -> ObjectiveState:
    return _touch(_existing(state, e), e, state="archived")


@_handles(events.KeyResultAdded)
def _kr_added(state: ObjectiveState | None, e: events.KeyResultAdded) -> ObjectiveState:
    s = _existing(state, e)
    if s.key_result(str(e.kr_id)) is not None:
        return _touch(s, e)
    kr = KeyResultState(
        id=str(e.kr_id),
        ordinal=len(s.key_results),
        title=e.title,
        kind=e.kind,
        unit=e.unit,
        comparison=e.comparison,
        weight=e.weight,
        kpi_id=None if e.kpi_id is None else str(e.kpi_id),
        aggregation=e.aggregation,
        targets=(TargetInForce(e.occurred_at, e.start, e.target),),
        removed=False,
        added_at=e.occurred_at,
        updated_at=e.occurred_at,
    )
    return _touch(s, e, key_results=(*s.key_results, kr))


def _kr(
    state: ObjectiveState | None, e: events.Event, kr_id: object
) -> tuple[ObjectiveState, KeyResultState | None]:
    s = _existing(state, e)
    return s, s.key_result(str(kr_id))


@_handles(events.KeyResultRevised)
def _kr_revised(state: ObjectiveState | None, e: events.KeyResultRevised) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    return _touch(s, e) if kr is None else _with_kr(s, e, kr.id, title=e.title)


@_handles(events.KeyResultRetargeted)
def _kr_retargeted(state: ObjectiveState | None, e: events.KeyResultRetargeted) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    if kr is None:
        return _touch(s, e)
    change = TargetInForce(
        e.occurred_at,
        kr.start if e.start is None else e.start,
        kr.target if e.target is None else e.target,
    )
    # The first entry stays the baseline; later ones are kept sorted by `since` (stable, so
    # of two changes at one instant the later event wins) and apply from their own time on.
    later = sorted((*kr.targets[1:], change), key=lambda t: t.since)
    targets = (kr.targets[0], *later)
    return _with_kr(s, e, kr.id, targets=targets)


@_handles(events.KeyResultReweighted)
def _kr_reweighted(state: ObjectiveState | None, e: events.KeyResultReweighted) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    return _touch(s, e) if kr is None else _with_kr(s, e, kr.id, weight=e.weight)


@_handles(events.KeyResultRemoved)
def _kr_removed(state: ObjectiveState | None, e: events.KeyResultRemoved) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    return _touch(s, e) if kr is None else _with_kr(s, e, kr.id, removed=True)


@_handles(events.KeyResultPromoted)
def _kr_promoted(state: ObjectiveState | None, e: events.KeyResultPromoted) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    return _touch(s, e) if kr is None else _with_kr(s, e, kr.id, kpi_id=str(e.kpi_id))


@_handles(events.KeyResultCheckedIn)
def _kr_checked_in(state: ObjectiveState | None, e: events.KeyResultCheckedIn) -> ObjectiveState:
    s, kr = _kr(state, e, e.kr_id)
    if kr is None:
        return _touch(s, e)
    checkin = CheckIn(
        event_id=str(e.event_id),
        kr_id=kr.id,
        value=e.value,
        done=e.done,
        confidence=e.confidence,
        note=e.note,
        occurred_at=e.occurred_at,
        recorded_at=e.recorded_at,
        version=e.stream_version,
    )
    s = _with_kr(s, e, kr.id)
    return replace(s, checkins=(*s.checkins, checkin))


# -- measurements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketValue:
    """A KPI's interval-bucket value inside a period and the instant it is judged at: the
    bucket's last instant inside the period, or the measurement's instant while the bucket
    is still open (as `bucket_judged_at`). A maintain key result judges it against the
    target in force then."""

    judged_at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a KPI says about a linked key result at an instant.

    `current`: the KR's aggregation over the readings inside the period up to the instant
    (None without readings; count: 0.0). `observations`: the KPI's interval-bucket values
    inside the period (for maintain KRs), oldest bucket first.
    """

    current: float | None
    observations: tuple[BucketValue, ...]


_TICK = timedelta(microseconds=1)


def _judged_at(start: datetime, interval: Interval, period: Period, at: datetime) -> datetime:
    """When the bucket starting at `start` is judged for a key result measured at `at`:
    `bucket_judged_at`, and no later than the period's last instant (the bucket's days after
    the period are not in its value, so a target set then is not its target)."""
    return bucket_judged_at(start, interval, min(at, period.ends_at - _TICK))


_WEEK = timedelta(days=7)
_DAY = timedelta(days=1)


def _bucket_last(bucket: date, interval: Interval, period: Period) -> datetime:
    """`_judged_at` of the bucket whose first day is `bucket`, for a measurement at the
    period's end: the bucket's last instant, at most the period's. Dates, not the general
    conversions: Series.of needs it for every bucket of the period."""
    if interval == "day":
        end = bucket + _DAY
    elif interval == "week":
        end = bucket + _WEEK
    else:
        end = date(bucket.year + (bucket.month == 12), bucket.month % 12 + 1, 1)
    end = min(end, period.end + _DAY)
    return datetime(end.year, end.month, end.day, tzinfo=UTC) - _TICK


def measure(
    days: Iterable[tuple[date, Accumulator]],
    aggregation: Aggregation,
    interval: Interval,
    period: Period,
    at: datetime,
) -> Measurement:
    """Measure a KPI for a key result from its per-UTC-day accumulators.

    Uses the days from the period's start to the day of `at` (inclusive) that lie inside the
    period; for an exact `as_of`, pass accumulators of the readings with observed_at <= at.
    """
    at = as_utc(at, "at")
    last_day = min(period.end, at.date())
    if at < period.starts_at:
        return Measurement(Accumulator.empty().value(aggregation), ())
    total = Accumulator.empty()
    buckets: dict[datetime, Accumulator] = {}
    for day, acc in days:
        if not period.start <= day <= last_day or acc.count == 0:
            continue
        total = total.merge(acc)
        start = bucket_start(datetime.combine(day, time(), tzinfo=UTC), interval)
        buckets[start] = buckets.get(start, Accumulator.empty()).merge(acc)
    observations = tuple(
        BucketValue(_judged_at(start, interval, period, at), v)
        for start, acc in sorted(buckets.items())
        if (v := acc.value(aggregation)) is not None
    )
    return Measurement(total.value(aggregation), observations)


@dataclass(frozen=True, slots=True)
class Series:
    """A KPI's per-day accumulators inside one period, prepared to answer `measure` for any
    instant by lookup: every measurement counts a prefix of the period's days, so running
    merges (order-independent) give the total and the bucket values up to each day."""

    aggregation: Aggregation
    period: Period
    dates: tuple[date, ...]
    totals: tuple[float | None, ...]  # totals[i]: value of the merge of days 0..i
    partial: tuple[float | None, ...]  # partial[i]: value of i's bucket's days up to i
    bucket_of: tuple[int, ...]  # bucket number of day i (0, 1, ... in order)
    closed: tuple[BucketValue, ...]  # values (not None) of complete buckets, in order
    closed_before: tuple[int, ...]  # closed_before[k]: how many of `closed` precede bucket k
    judged_at: tuple[datetime, ...]  # judged_at[k]: bucket k's last instant in the period

    @classmethod
    def of(
        cls,
        days: Iterable[tuple[date, Accumulator]],
        aggregation: Aggregation,
        interval: Interval,
        period: Period,
    ) -> Series:
        kept = sorted(
            ((d, acc) for d, acc in days if period.start <= d <= period.end and acc.count),
            key=lambda item: item[0],
        )
        totals: list[float | None] = []
        partial: list[float | None] = []
        bucket_of: list[int] = []
        closed: list[BucketValue] = []
        closed_before: list[int] = []
        judged_at: list[datetime] = []
        total = Running()
        current = Running()
        start: date | None = None
        for d, acc in kept:
            bucket = bucket_day(d, interval)
            if bucket != start:
                if start is not None and (v := current.value(aggregation)) is not None:
                    closed.append(BucketValue(judged_at[-1], v))
                closed_before.append(len(closed))
                judged_at.append(_bucket_last(bucket, interval, period))
                current = Running()
                start = bucket
            total.merge(acc)
            current.merge(acc)
            totals.append(total.value(aggregation))
            partial.append(current.value(aggregation))
            bucket_of.append(len(closed_before) - 1)
        return cls(
            aggregation,
            period,
            tuple(d for d, _ in kept),
            tuple(totals),
            tuple(partial),
            tuple(bucket_of),
            tuple(closed),
            tuple(closed_before),
            tuple(judged_at),
        )

    def at(self, at: datetime) -> Measurement:
        """`measure(days, aggregation, interval, period, at)`."""
        at = as_utc(at, "at")
        i = bisect_right(self.dates, min(self.period.end, at.date())) - 1
        if at < self.period.starts_at or i < 0:
            return Measurement(Accumulator.empty().value(self.aggregation), ())
        bucket = self.bucket_of[i]
        observations = self.closed[: self.closed_before[bucket]]
        last = self.partial[i]
        if last is not None:
            # The bucket of `at`'s last day is open at `at` unless it ended before.
            observations += (BucketValue(min(self.judged_at[bucket], at), last),)
        return Measurement(self.totals[i], observations)


def measure_many(
    days: Iterable[tuple[date, Accumulator]],
    aggregation: Aggregation,
    interval: Interval,
    period: Period,
    ats: Sequence[datetime],
) -> list[Measurement]:
    """`measure(days, aggregation, interval, period, at)` for every `at` of `ats`, from one
    pass over the days (`Series`)."""
    series = Series.of(days, aggregation, interval, period)
    return [series.at(at) for at in ats]


# -- evaluation -----------------------------------------------------------------------------


def _latest_checkin(checkins: Iterable[CheckIn]) -> CheckIn | None:
    latest: CheckIn | None = None
    for c in checkins:
        if latest is None or (c.occurred_at, c.version) > (latest.occurred_at, latest.version):
            latest = c
    return latest


def _checkins_by(state: ObjectiveState, kr_id: str, at: datetime | None) -> list[CheckIn]:
    """The key result's check-ins that count at the evaluation time `at` (all of them when
    None). A closed or archived objective's score is final at its close: check-ins that
    occurred after it do not count. An active one is evaluated now, and every check-in
    counts: one accepted a little ahead (up to 5 minutes) counts at once, as no later
    evaluation would come for it, and a valid-time cut (as_of) has left out later events."""
    cut = None if at is None or state.state == "active" else at
    return [c for c in state.checkins if c.kr_id == kr_id and (cut is None or c.occurred_at <= cut)]


LATEST = datetime.max.replace(tzinfo=UTC)


def target_at(state: ObjectiveState, kr: KeyResultState, at: datetime) -> TargetInForce:
    """The key result's start/target that an evaluation of `state` at `at` uses: the one in
    force at `at`. An active objective is evaluated now, so a retargeting accepted a little
    ahead (up to AHEAD) is in force at once, as a check-in is (_checkins_by): no later
    evaluation would come for it. A time-travel cut has left out what occurred after `at`."""
    if state.state != "active" or at.astimezone(UTC) > LATEST - AHEAD:
        return kr.in_force(at)
    return kr.in_force(at + AHEAD)


def key_result_input(
    state: ObjectiveState,
    kr: KeyResultState,
    measurement: Measurement | None,
    at: datetime,
) -> KeyResultInput:
    """What scoring needs of `kr` at `at`: start/target in force then, and its current value
    (the KPI's measurement when linked and it has one, else the latest check-in's value).
    Of a closed objective, only check-ins that occurred by `at` count, for every kind
    (_checkins_by). A maintain KR's observations (the KPI's buckets when linked and it has
    some, else check-ins) each carry the target in force at their own time: a later
    retargeting does not judge them again. A KPI without data in the period leaves the
    check-ins in force: a key result promoted to a KPI keeps its score until the KPI's
    first reading, instead of falling to its start."""
    force = target_at(state, kr, at)
    own = _checkins_by(state, kr.id, at)
    latest = _latest_checkin(own)
    latest_valued = _latest_checkin(c for c in own if c.value is not None)
    current = latest_valued.value if latest_valued is not None else None
    linked = kr.kpi_id is not None and measurement is not None
    if linked:
        assert measurement is not None
        if measurement.current is not None:
            current = measurement.current
    observations: tuple[Observation, ...] = ()
    if kr.kind == "maintain" and force.target is not None:
        observed: list[tuple[datetime, float]]
        if linked and measurement is not None and measurement.observations:
            observed = [(b.judged_at, b.value) for b in measurement.observations]
        else:
            observed = [
                (c.occurred_at, c.value)
                for c in sorted(own, key=lambda c: (c.occurred_at, c.version))
                if c.value is not None and state.period.contains(c.occurred_at)
            ]
        if len(kr.targets) == 1:  # one target all along: no lookup per observation
            target = force.target
            observations = tuple(Observation(v, target) for _, v in observed)
        else:
            observations = tuple(
                Observation(v, _target_at(kr, t, force.target)) for t, v in observed
            )
    done = latest.done if latest is not None else None
    return KeyResultInput(
        id=kr.id,
        kind=kr.kind,
        weight=kr.weight,
        start=force.start,
        target=force.target,
        comparison=kr.comparison,
        current=current,
        done=done,
        observations=observations,
    )


def _target_at(kr: KeyResultState, t: datetime, fallback: float) -> float:
    """The target in force at `t`; `fallback` (the one in force at the evaluation time)
    only if none was set yet then."""
    target = kr.in_force(t).target
    return fallback if target is None else target


def latest_done(state: ObjectiveState, kr_id: str, at: datetime | None = None) -> bool | None:
    """`done` of the key result's latest check-in that counts at the evaluation time `at`
    (_checkins_by; every check-in when None); with `at`, what `key_result_input` gives."""
    latest = _latest_checkin(_checkins_by(state, kr_id, at))
    return None if latest is None else latest.done


def latest_confidence(
    state: ObjectiveState, kr_id: str, at: datetime | None = None
) -> float | None:
    """The confidence of the key result's latest check-in that gave one and counts at the
    evaluation time `at` (_checkins_by; every check-in when None)."""
    latest = _latest_checkin(c for c in _checkins_by(state, kr_id, at) if c.confidence is not None)
    return None if latest is None else latest.confidence


def evaluate(
    state: ObjectiveState,
    measurements: Mapping[str, Measurement],
    at: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> tuple[ObjectiveScore, dict[str, KeyResultScore]]:
    """Score the objective at `at` (API.md "Scoring policy v1").

    `measurements`: by key-result id, for KPI-linked KRs (see `measure`); a linked KR
    without one scores as if it had no readings yet. Returns the objective's score and the
    score of each active key result by id.
    """
    at = as_utc(at, "at")
    scores: dict[str, KeyResultScore] = {}
    weighted: list[tuple[float, KeyResultScore]] = []
    for kr in state.active_key_results:
        measurement = measurements.get(kr.id)
        if kr.kpi_id is not None and measurement is None:
            measurement = Measurement(None, ())
        scored = score_key_result(key_result_input(state, kr, measurement, at))
        scores[kr.id] = scored
        weighted.append((kr.weight, scored))
    return score_objective(weighted, state.period, at, policy), scores

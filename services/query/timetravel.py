"""as_of (valid time) and known_at (knowledge time) views, recomputed from stored events.

The objective's goal events (canonical JSON in goal_events) and the raw readings are cut
at the requested instants and folded with the same projections/ functions the processor
uses (projections.objective's event handlers through fold_cut, measure, evaluate), so a
view as of T equals what a replay of the log cut at T gives.

- as_of: events with occurred_at ≤ as_of and readings with observed_at ≤ as_of, evaluated
  at as_of.
- known_at: events and readings recorded ≤ known_at, evaluated at known_at (or at as_of
  when both are given).

Every event in the cut counts, also one recorded after an event left out (a backdated
import): the cut is folded with `fold_cut`, in stream order, and the view's `version` is
the greatest stream_version in the cut (the newest event the view reflects). The children
are the objectives whose parent was this one at the cut (objective.drafted /
objective.realigned), not today's parent links. Instants are taken in UTC whatever offset
the caller wrote, since days and buckets are UTC days.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import cached_property
from itertools import groupby
from operator import itemgetter
from typing import Any

import events
from projections.kpi import (
    Accumulator,
    KpiTarget,
    bucket_start,
    is_stale,
    kpi_status,
    kpi_targets,
    scaled_sum,
    target_in_force,
)
from projections.objective import (
    KeyResultState,
    Measurement,
    ObjectiveState,
    evaluate,
    fold_cut,
    latest_confidence,
    measure,
    target_at,
)
from projections.periods import as_utc
from projections.policy import DEFAULT_POLICY
from projections.scoring import MAX_ROLLUP_LEVELS, rollup_score
from services.projectionstore.schema import iso, parse_iso
from services.query.reads import Reads
from services.query.views import DAY_COLUMNS, accumulator_of


def _cut(as_of: datetime | None, known_at: datetime | None) -> tuple[str, list[str]]:
    """SQL conditions (with a leading AND) and parameters keeping the goal events of the
    cut: occurred_at ≤ as_of, recorded_at ≤ known_at."""
    where, params = "", []
    if as_of is not None:
        where += " AND occurred_at <= ?"
        params.append(iso(as_of))
    if known_at is not None:
        where += " AND recorded_at <= ?"
        params.append(iso(known_at))
    return where, params


def _events(
    r: Reads, stream_id: str, as_of: datetime | None, known_at: datetime | None
) -> list[events.Event]:
    """The stream's events in the cut, in stream order."""
    where, params = _cut(as_of, known_at)
    rows = r.rows(
        f"SELECT body FROM {r.t.goal_events} WHERE stream_id = ? AND org_id = ?{where}"
        " ORDER BY stream_version",
        [stream_id, r.org, *params],
    )
    return [events.decode(body) for (body,) in rows]


class _ParentsAt:
    """Which objectives were whose children at one cut.

    Only objective.realigned changes an objective's parent, so one never realigned has had
    its drafted parent all along and the live parent_id (indexed) finds it. The few ever
    realigned are folded from their drafted and realigned events within the cut, once per
    read: their parent today says nothing about their parent then.
    """

    def __init__(self, r: Reads, as_of: datetime | None, known_at: datetime | None) -> None:
        self._r = r
        self._as_of = as_of
        self._known_at = known_at

    @cached_property
    def _realigned(self) -> dict[str, str | None]:
        """The parent at the cut of each objective ever realigned that was drafted by then."""
        r = self._r
        drafted, realigned = (
            events.ObjectiveDrafted.type_name(),
            events.ObjectiveRealigned.type_name(),
        )
        where, params = _cut(self._as_of, self._known_at)
        rows = r.rows(
            f"SELECT stream_id, body FROM {r.t.goal_events}"
            f" WHERE org_id = ? AND type IN (?, ?){where} AND stream_id IN"
            f" (SELECT stream_id FROM {r.t.goal_events} WHERE org_id = ? AND type = ?)"
            " ORDER BY stream_id, stream_version",
            [r.org, drafted, realigned, *params, r.org, realigned],
        )
        parents: dict[str, str | None] = {}
        for stream_id, stream in groupby(rows, key=itemgetter(0)):
            state = fold_cut(events.decode(body) for _, body in stream)
            if state is not None:
                parents[str(stream_id)] = state.parent_id
        return parents

    def children(self, parent_id: str) -> list[str]:
        """Ids of the objectives whose parent was `parent_id` at the cut, in id order (with
        some drafted only after it: their view as of the cut is None)."""
        r = self._r
        live = r.rows(
            f"SELECT objective_id FROM {r.t.objectives} WHERE parent_id = ? AND org_id = ?",
            (parent_id, r.org),
        )
        found = {str(c) for (c,) in live} - self._realigned.keys()
        found.update(c for c, parent in self._realigned.items() if parent == parent_id)
        return sorted(found)


def _day_accumulators(rows: Iterable[tuple[Any, ...]]) -> dict[date, Accumulator]:
    """Per-UTC-day accumulators of (value, observed_at, reading_id) rows, exact totals."""
    per_day: dict[date, list[tuple[float, str, str]]] = {}
    for value, observed_at, reading_id in rows:
        per_day.setdefault(date.fromisoformat(observed_at[:10]), []).append(
            (float(value), observed_at, str(reading_id))
        )
    result: dict[date, Accumulator] = {}
    for day, readings in per_day.items():
        values = [v + 0.0 for v, _, _ in readings]
        last_at, last_key, last_value = max((o, k, v) for v, o, k in readings)
        result[day] = Accumulator(
            count=len(values),
            scaled_total=scaled_sum(values),
            minimum=min(values),
            maximum=max(values),
            last_at=parse_iso(last_at),
            last_value=last_value + 0.0,
            last_key=last_key,
        )
    return result


def kpi_days_at(
    r: Reads,
    kpi_id: str,
    first_day: date,
    at: datetime,
    known_at: datetime | None,
) -> dict[date, Accumulator]:
    """Day accumulators of the KPI's readings observed in [first_day 00:00Z, at] (and
    recorded ≤ known_at), by UTC day. The complete days come from kpi_days (with known_at,
    those whose readings were all recorded by then: kpi_days.last_recorded); the UTC day of
    `at`, and the days recorded into after known_at, are read reading by reading."""
    at = as_utc(at, "at")
    at_text, at_day = iso(at), at.date()
    known = None if known_at is None else iso(known_at)
    found: dict[date, Accumulator] = {}
    recount: list[tuple[date, str]] = []
    for row in r.rows(
        f"SELECT {DAY_COLUMNS}, last_recorded FROM {r.t.kpi_days}"
        " WHERE kpi_id = ? AND day >= ? AND day < ?",
        (kpi_id, first_day.isoformat(), at_day.isoformat()),
    ):
        day = date.fromisoformat(row[0])
        if known is None or (row[-1] is not None and row[-1] <= known):
            found[day] = accumulator_of(row[:-1])
        else:
            recount.append((day, iso(datetime.combine(day, time.max, UTC))))
    if at_day >= first_day:
        recount.append((at_day, at_text))
    for day, end in recount:
        sql = (
            f"SELECT value, observed_at, reading_id FROM {r.t.readings}"
            " WHERE kpi_id = ? AND observed_at >= ? AND observed_at <= ?"
        )
        params = [kpi_id, iso(datetime.combine(day, time(), UTC)), end]
        if known is not None:
            sql += " AND recorded_at <= ?"
            params.append(known)
        found.update(_day_accumulators(r.rows(sql, params)))
    return found


def _kpi_meta(r: Reads, kpi_id: str) -> tuple[str, str] | None:
    """(interval, aggregation) of a KPI of the caller's organisation."""
    row = r.rows(
        f"SELECT interval, aggregation FROM {r.t.kpis} WHERE kpi_id = ? AND org_id = ?",
        (kpi_id, r.org),
    )
    return (str(row[0][0]), str(row[0][1])) if row else None


def _measurements(
    r: Reads, state: ObjectiveState, at: datetime, known_at: datetime | None
) -> dict[str, Measurement]:
    found: dict[str, Measurement] = {}
    for kr in state.active_key_results:
        if kr.kpi_id is None:
            continue
        meta = _kpi_meta(r, kr.kpi_id)
        if meta is None:
            continue
        interval, kpi_aggregation = meta
        aggregation = kr.aggregation or kpi_aggregation
        days = kpi_days_at(r, kr.kpi_id, state.period.start, at, known_at)
        found[kr.id] = measure(
            sorted(days.items()),
            aggregation,  # type: ignore[arg-type]
            interval,  # type: ignore[arg-type]
            state.period,
            at,
        )
    return found


def _kr_view(
    state: ObjectiveState, kr: KeyResultState, scored: Any, at: datetime
) -> dict[str, Any]:
    force = target_at(state, kr, at)
    return {
        "id": kr.id,
        "title": kr.title,
        "kind": kr.kind,
        "unit": kr.unit,
        "start": force.start,
        "target": force.target,
        "comparison": kr.comparison,
        "weight": kr.weight,
        "kpi_id": kr.kpi_id,
        "aggregation": kr.aggregation,
        "current": scored.current,
        "progress": scored.progress,
        "score": scored.score,
        "confidence": latest_confidence(state, kr.id, at),
        "updated_at": iso(kr.updated_at),
    }


def _own_view(
    r: Reads, objective_id: str, as_of: datetime | None, known_at: datetime | None
) -> tuple[dict[str, Any], float | None] | None:
    """The objective's view at the cut without its children (`_view` fills in children and
    rollup_score), and its own score for the rollup (None without key results); None when
    it did not exist then."""
    state = fold_cut(_events(r, objective_id, as_of, known_at))
    if state is None:
        return None
    at = as_of or known_at or as_utc(r.now, "now")
    # The final score is fixed at closing, also once the objective is archived, with what
    # was known when the close was recorded: the processor's rule (ObjectiveState.final_cut,
    # Projector.evaluation_time and _measurements).
    at_eval, known_eval = at, known_at
    if (cut := state.final_cut) is not None:
        at_eval = min(at, cut[0])
        known_eval = cut[1] if known_at is None else min(known_at, cut[1])
    score, kr_scores = evaluate(state, _measurements(r, state, at_eval, known_eval), at_eval)
    view = {
        "id": state.id,
        "title": state.title,
        "description": state.description,
        "owner": state.owner,
        "level": state.level,
        "parent_id": state.parent_id,
        "period": {"start": state.period.start.isoformat(), "end": state.period.end.isoformat()},
        "state": state.state,
        "version": state.version,
        "score": score.score,
        "progress": score.progress,
        "rollup_score": None,
        "expected": score.expected,
        "health": score.health,
        "status": score.status,
        "forecast": score.forecast,
        "zone": score.zone,
        "policy_version": score.policy_version,
        "evaluated_at": iso(at_eval),
        "children": [],
        "key_results": [
            _kr_view(state, kr, kr_scores[kr.id], at_eval) for kr in state.active_key_results
        ],
        "as_of": None if as_of is None else iso(as_of),
        "known_at": None if known_at is None else iso(known_at),
    }
    return view, score.score if state.active_key_results else None


@dataclass
class _Level:
    """One objective on the walk down the hierarchy: its view, its own score, the children
    still to visit, and the ids and rollups of those visited (archived ones left out)."""

    view: dict[str, Any]
    own: float | None
    pending: Iterator[str]
    children: list[str] = field(default_factory=list)
    rollups: list[float] = field(default_factory=list)


def _view(
    r: Reads,
    objective_id: str,
    as_of: datetime | None,
    known_at: datetime | None,
    parents: _ParentsAt,
) -> dict[str, Any] | None:
    """The objective's view at the cut with its children and rollup_score.

    Depth first with an explicit stack, not recursion: a hierarchy may be deeper than
    Python's recursion limit. It spans up to MAX_ROLLUP_LEVELS levels, as far as the
    processor rolls up, and visits each objective once: a cut may hold a parent cycle that
    the live links never had (a backdated realignment)."""
    root = _own_view(r, objective_id, as_of, known_at)
    if root is None:
        return None
    visited = {objective_id}
    walk = [_Level(*root, pending=iter(parents.children(objective_id)))]
    while True:
        level = walk[-1]
        child_id = next(level.pending, None)
        if child_id is None:
            walk.pop()
            level.view["children"] = level.children
            level.view["rollup_score"] = rollup_score(level.own, level.rollups)
            if not walk:
                return level.view
            walk[-1].children.append(level.view["id"])
            walk[-1].rollups.append(level.view["rollup_score"])
            continue
        if child_id in visited:
            continue
        visited.add(child_id)
        child = _own_view(r, child_id, as_of, known_at)
        if child is None or child[0]["state"] == "archived":
            continue  # not drafted by then; or archived, which no rollup counts
        below = parents.children(child_id) if len(walk) + 1 < MAX_ROLLUP_LEVELS else []
        walk.append(_Level(*child, pending=iter(below)))


def objective_at(
    r: Reads, objective_id: str, as_of: datetime | None, known_at: datetime | None
) -> dict[str, Any] | None:
    """The objective view as it stood at valid time `as_of` / knowledge time `known_at`;
    None when it did not exist then (or belongs to another organisation)."""
    as_of = None if as_of is None else as_utc(as_of, "as_of")
    known_at = None if known_at is None else as_utc(known_at, "known_at")
    return _view(r, objective_id, as_of, known_at, _ParentsAt(r, as_of, known_at))


def kpi_at(r: Reads, kpi_id: str, as_of: datetime) -> dict[str, Any] | None:
    """The KPI view at valid time `as_of`: definition in force, current bucket, status."""
    as_of = as_utc(as_of, "as_of")
    stream = _events(r, kpi_id, as_of, None)
    if not stream or not isinstance(stream[0], events.KpiDefined):
        return None
    d = stream[0]
    name, owner, description, state = d.name, d.owner, d.description, "active"
    changes = [KpiTarget(d.occurred_at, d.target, d.amber)]
    for e in stream[1:]:
        if isinstance(e, events.KpiRevised):
            name = e.name or name
            owner = e.owner or owner
            description = e.description or description
        elif isinstance(e, events.KpiRetargeted):
            changes.append(KpiTarget(e.occurred_at, e.target, e.amber))
        elif isinstance(e, events.KpiRetired):
            state = "retired"
    # The target in force at as_of by valid time (as /series judges buckets), not the one
    # appended last: an imported history may record an older retargeting after a newer one.
    force = target_in_force(kpi_targets(changes), as_of)
    start = bucket_start(as_of, d.interval)
    days = kpi_days_at(r, kpi_id, start.date(), as_of, None)
    acc = Accumulator.empty()
    for day_acc in days.values():
        acc = acc.merge(day_acc)
    # No readings in the bucket is no value (status no_data), for count too: the
    # processor's rule (a count would otherwise read 0, red for an increasing KPI).
    value = acc.value(d.aggregation) if acc.count else None
    last = r.rows(
        f"SELECT MAX(observed_at) FROM {r.t.readings} WHERE kpi_id = ? AND observed_at <= ?",
        (kpi_id, iso(as_of)),
    )
    last_reading_at = last[0][0] if last and last[0][0] else None
    return {
        "id": kpi_id,
        "name": name,
        "unit": d.unit,
        "direction": d.direction,
        "target": force.target,
        "amber": force.amber,
        "interval": d.interval,
        "aggregation": d.aggregation,
        "current": value,
        "status": kpi_status(value, d.direction, force.target, force.amber),
        "last_reading_at": last_reading_at,
        "stale": state == "active"
        and is_stale(
            parse_iso(last_reading_at) if last_reading_at else None,
            d.occurred_at,
            d.interval,
            as_of,
        ),
        "policy_version": DEFAULT_POLICY.version,
        "version": stream[-1].stream_version,
        "state": state,
        "owner": owner,
        "description": description,
        "as_of": iso(as_of),
    }

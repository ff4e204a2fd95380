"""The Objective aggregate: an objective with its key results and check-ins.

State is a pure fold over the objective stream's events, dispatched by event type.
Commands are pure functions of the state that return the events they decide, or raise
Refused (an invariant, 409) / Invalid (422) / NotFound (404).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal, TypeVar
from uuid import UUID

import events
from services.command.decisions import Invalid, NotFound, Pending, Refused
from services.command.kpi import Kpi, default_interval_amber

ObjectiveState = Literal["active", "closed", "archived"]


@dataclass(frozen=True, slots=True)
class KeyResult:
    id: UUID
    title: str
    kind: str
    start: float | None
    target: float | None
    comparison: str | None
    unit: str | None
    weight: float
    kpi_id: UUID | None
    aggregation: str | None
    promoted_to: UUID | None = None


@dataclass(frozen=True, slots=True)
class Objective:
    id: UUID
    org_id: str
    version: int
    last_hash: str | None
    title: str
    description: str | None
    owner: str
    level: str
    parent_id: UUID | None
    period_start: date
    period_end: date
    state: ObjectiveState = "active"
    key_results: Mapping[UUID, KeyResult] = ()  # type: ignore[assignment]


# -- the fold ------------------------------------------------------------------------------

E = TypeVar("E", bound=events.Event)
_EVOLVE: dict[type[events.Event], Callable[[Objective, Any], Objective]] = {}


def _evolves(cls: type[E]) -> Callable[[Callable[[Objective, E], Objective]], Any]:
    def register(fn: Callable[[Objective, E], Objective]) -> Callable[[Objective, E], Objective]:
        _EVOLVE[cls] = fn
        return fn

    return register


def fold(stream: Iterable[events.Event]) -> Objective | None:
    """The objective after its events, or None when the stream is not an objective."""
    state: Objective | None = None
    for event in stream:
        if state is None:
            if not isinstance(event, events.ObjectiveDrafted):
                return None
            state = _drafted(event)
            continue
        step = _EVOLVE.get(type(event))
        if step is None:
            raise TypeError(f"{event.type} does not belong on an objective stream")
        state = replace(step(state, event), version=event.stream_version, last_hash=event.hash)
    return state


def fold_onto(state: Objective, stream: Iterable[events.Event]) -> Objective:
    """The state after more events of its stream."""
    for event in stream:
        state = evolve(state, event)
    return state


def evolve(state: Objective, event: events.Event) -> Objective:
    """One step of the fold (the state after `event`)."""
    step = _EVOLVE.get(type(event))
    if step is None:
        raise TypeError(f"{event.type} does not belong on an objective stream")
    return replace(step(state, event), version=event.stream_version, last_hash=event.hash)


def _drafted(e: events.ObjectiveDrafted) -> Objective:
    return Objective(
        id=e.stream_id,
        org_id=e.org_id,
        version=e.stream_version,
        last_hash=e.hash,
        title=e.title,
        description=e.description,
        owner=e.owner,
        level=e.level,
        parent_id=e.parent_id,
        period_start=e.period.start,
        period_end=e.period.end,
        key_results={},
    )


@_evolves(events.ObjectiveRevised)
def _revised(s: Objective, e: events.ObjectiveRevised) -> Objective:
    return replace(
        s,
        title=e.title if e.title is not None else s.title,
        description=s.description if e.description is None else e.description or None,
        owner=e.owner if e.owner is not None else s.owner,
    )


@_evolves(events.ObjectiveRealigned)
def _realigned(s: Objective, e: events.ObjectiveRealigned) -> Objective:
    return replace(s, parent_id=e.parent_id)


@_evolves(events.ObjectiveRescheduled)
def _rescheduled(s: Objective, e: events.ObjectiveRescheduled) -> Objective:
    return replace(s, period_start=e.period.start, period_end=e.period.end)


@_evolves(events.ObjectiveClosed)
def _closed(s: Objective, e: events.ObjectiveClosed) -> Objective:
    return replace(s, state="closed")


@_evolves(events.ObjectiveReopened)
def _reopened(s: Objective, e: events.ObjectiveReopened) -> Objective:
    return replace(s, state="active")


@_evolves(events.ObjectiveArchived)
def _archived(s: Objective, e: events.ObjectiveArchived) -> Objective:
    return replace(s, state="archived")


def _with_kr(s: Objective, kr: KeyResult) -> Objective:
    return replace(s, key_results={**s.key_results, kr.id: kr})


@_evolves(events.KeyResultAdded)
def _kr_added(s: Objective, e: events.KeyResultAdded) -> Objective:
    kr = KeyResult(
        id=e.kr_id,
        title=e.title,
        kind=e.kind,
        start=e.start,
        target=e.target,
        comparison=e.comparison,
        unit=e.unit,
        weight=e.weight,
        kpi_id=e.kpi_id,
        aggregation=e.aggregation,
    )
    return _with_kr(s, kr)


@_evolves(events.KeyResultRevised)
def _kr_revised(s: Objective, e: events.KeyResultRevised) -> Objective:
    return _with_kr(s, replace(s.key_results[e.kr_id], title=e.title))


@_evolves(events.KeyResultRetargeted)
def _kr_retargeted(s: Objective, e: events.KeyResultRetargeted) -> Objective:
    kr = s.key_results[e.kr_id]
    return _with_kr(
        s,
        replace(
            kr,
            start=e.start if e.start is not None else kr.start,
            target=e.target if e.target is not None else kr.target,
        ),
    )


@_evolves(events.KeyResultReweighted)
def _kr_reweighted(s: Objective, e: events.KeyResultReweighted) -> Objective:
    return _with_kr(s, replace(s.key_results[e.kr_id], weight=e.weight))


@_evolves(events.KeyResultRemoved)
def _kr_removed(s: Objective, e: events.KeyResultRemoved) -> Objective:
    return replace(s, key_results={k: v for k, v in s.key_results.items() if k != e.kr_id})


@_evolves(events.KeyResultCheckedIn)
def _kr_checked_in(s: Objective, e: events.KeyResultCheckedIn) -> Objective:
    return s  # check-ins change scores (projections), not the aggregate's invariants


@_evolves(events.KeyResultPromoted)
def _kr_promoted(s: Objective, e: events.KeyResultPromoted) -> Objective:
    kr = s.key_results[e.kr_id]
    return _with_kr(s, replace(kr, kpi_id=e.kpi_id, promoted_to=e.kpi_id))


# -- commands ------------------------------------------------------------------------------

Loader = Callable[[UUID], "Objective | None"]


def check_parent(org_id: str, objective_id: UUID, parent_id: UUID, load: Loader) -> None:
    """Refuse a parent that is unknown in `org_id`, archived (a command on an archived
    objective is refused: taking a child is one), or whose ancestry contains the objective."""
    seen: set[UUID] = set()
    current: UUID | None = parent_id
    while current is not None:
        if current == objective_id:
            raise Refused("this parent would make a cycle")
        if current in seen:  # an existing cycle in old data: stop walking
            return
        seen.add(current)
        ancestor = load(current)
        if ancestor is None or ancestor.org_id != org_id:
            if current == parent_id:
                raise Refused(f"parent objective {parent_id} does not exist in this organisation")
            return
        if current == parent_id and ancestor.state == "archived":
            raise Refused(f"parent objective {parent_id} is archived")
        current = ancestor.parent_id


def draft(
    objective_id: UUID, org_id: str, fields: Mapping[str, Any], load: Loader
) -> list[Pending]:
    """objective.drafted for a new objective (`fields`: title, description, owner, level,
    parent_id, period)."""
    parent_id = fields.get("parent_id")
    if parent_id is not None:
        check_parent(org_id, objective_id, parent_id, load)
    return [(events.ObjectiveDrafted, dict(fields))]


def _active(s: Objective) -> None:
    if s.state == "archived":
        raise Refused("the objective is archived")
    if s.state == "closed":
        raise Refused("the objective is closed; reopen it first")


def _not_archived(s: Objective) -> None:
    if s.state == "archived":
        raise Refused("the objective is archived")


def revise(s: Objective, changes: Mapping[str, Any], load: Loader) -> list[Pending]:
    """Events for a PATCH: revised (title/description/owner), realigned, rescheduled."""
    _active(s)
    decided: list[Pending] = []
    revised = {k: changes[k] for k in ("title", "owner") if changes.get(k) is not None}
    if "description" in changes:  # null clears it: recorded as an empty description
        revised["description"] = changes["description"] or ""
    if revised:
        decided.append((events.ObjectiveRevised, revised))
    if "parent_id" in changes:
        parent_id = changes["parent_id"]
        if parent_id is not None:
            check_parent(s.org_id, s.id, parent_id, load)
        decided.append((events.ObjectiveRealigned, {"parent_id": parent_id}))
    if "period" in changes:
        decided.append((events.ObjectiveRescheduled, {"period": changes["period"]}))
    if not decided:
        raise Invalid("nothing to change")
    return decided


def close(s: Objective, note: str | None) -> list[Pending]:
    _active(s)
    return [(events.ObjectiveClosed, {"note": note})]


def reopen(s: Objective) -> list[Pending]:
    _not_archived(s)
    if s.state != "closed":
        raise Refused("only a closed objective can be reopened")
    return [(events.ObjectiveReopened, {})]


def archive(s: Objective) -> list[Pending]:
    _not_archived(s)
    return [(events.ObjectiveArchived, {})]


def _linkable(kpi: Kpi | None, kpi_id: UUID, org_id: str) -> Kpi:
    if kpi is None or kpi.org_id != org_id:
        raise Refused(f"KPI {kpi_id} does not exist in this organisation")
    if kpi.retired:
        raise Refused(f"KPI {kpi_id} is retired")
    return kpi


def add_key_result(
    s: Objective, kr_id: UUID, fields: Mapping[str, Any], kpi: Kpi | None
) -> list[Pending]:
    """key_result.added; a KPI link must name a live KPI of the organisation."""
    _active(s)
    payload = {"kr_id": kr_id, **fields}
    kpi_id = fields.get("kpi_id")
    if kpi_id is not None:
        linked = _linkable(kpi, kpi_id, s.org_id)
        if payload.get("aggregation") is None:
            payload["aggregation"] = linked.aggregation
    return [(events.KeyResultAdded, payload)]


def key_result(s: Objective, kr_id: UUID) -> KeyResult:
    kr = s.key_results.get(kr_id)
    if kr is None:
        raise NotFound(f"key result {kr_id} not found")
    return kr


def update_key_result(s: Objective, kr_id: UUID, changes: Mapping[str, Any]) -> list[Pending]:
    """revised (title), retargeted (start/target, with reason), reweighted (weight)."""
    _active(s)
    kr = key_result(s, kr_id)
    decided: list[Pending] = []
    if changes.get("title") is not None:
        decided.append((events.KeyResultRevised, {"kr_id": kr_id, "title": changes["title"]}))
    start, target = changes.get("start"), changes.get("target")
    if start is not None or target is not None:
        if kr.kind == "milestone":
            raise Refused("a milestone key result has no start or target")
        if kr.kind == "maintain" and start is not None:
            raise Refused("a maintain key result has no start")
        new_start = start if start is not None else kr.start
        new_target = target if target is not None else kr.target
        if kr.kind == "metric" and new_start == new_target:
            raise Refused("a metric key result needs start ≠ target")
        decided.append(
            (
                events.KeyResultRetargeted,
                {"kr_id": kr_id, "start": start, "target": target, "reason": changes.get("reason")},
            )
        )
    if changes.get("weight") is not None:
        decided.append((events.KeyResultReweighted, {"kr_id": kr_id, "weight": changes["weight"]}))
    if not decided:
        raise Invalid("nothing to change")
    return decided


def remove_key_result(s: Objective, kr_id: UUID) -> list[Pending]:
    _active(s)
    key_result(s, kr_id)
    return [(events.KeyResultRemoved, {"kr_id": kr_id})]


def check_in(s: Objective, kr_id: UUID, fields: Mapping[str, Any]) -> list[Pending]:
    """key_result.checked_in: a value for metric/maintain, done for milestone."""
    _active(s)
    kr = key_result(s, kr_id)
    value, done = fields.get("value"), fields.get("done")
    if kr.kind == "milestone":
        if value is not None:
            raise Refused("a milestone key result takes done, not a value")
        if done is None:
            raise Refused("a milestone check-in needs done")
    else:
        if done is not None:
            raise Refused(f"a {kr.kind} key result takes a value, not done")
        if value is None:
            raise Refused(f"a {kr.kind} check-in needs a value")
    return [(events.KeyResultCheckedIn, {"kr_id": kr_id, **fields})]


def promote(
    s: Objective, kr_id: UUID, kpi_id: UUID, interval: str | None, amber: float | None
) -> tuple[list[Pending], list[Pending]]:
    """(objective events, new KPI stream events): the KR becomes an ongoing KPI, linked."""
    _active(s)
    kr = key_result(s, kr_id)
    if kr.kind == "milestone":
        raise Refused("a milestone key result cannot become a KPI")
    if kr.promoted_to is not None:
        raise Refused(f"the key result was already promoted to KPI {kr.promoted_to}")
    if kr.kpi_id is not None:
        raise Refused(f"the key result is already measured by KPI {kr.kpi_id}")
    assert kr.target is not None
    if kr.kind == "metric":
        assert kr.start is not None
        direction = "increase" if kr.target >= kr.start else "decrease"
    else:
        direction = "increase" if kr.comparison == "at_least" else "decrease"
    interval, amber = default_interval_amber(direction, kr.target, interval, amber)
    kpi_events: list[Pending] = [
        (
            events.KpiDefined,
            {
                "name": kr.title,
                "unit": kr.unit,
                "direction": direction,
                "target": kr.target,
                "amber": amber,
                "interval": interval,
                "aggregation": kr.aggregation or "last",
                "owner": s.owner,
                "promoted_from_objective_id": s.id,
                "promoted_from_kr_id": kr_id,
            },
        )
    ]
    return [(events.KeyResultPromoted, {"kr_id": kr_id, "kpi_id": kpi_id})], kpi_events

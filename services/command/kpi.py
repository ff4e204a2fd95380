"""The Kpi aggregate: an ongoing indicator with a target and an amber threshold.

Readings live on their own streams (services/ingest); this is the KPI's definition only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import events
from contracts.http import check_amber, default_amber
from services.command.decisions import Invalid, Pending, Refused

DEFAULT_PROMOTED_INTERVAL = "week"


@dataclass(frozen=True, slots=True)
class Kpi:
    id: UUID
    org_id: str
    version: int
    last_hash: str | None
    name: str
    direction: str
    target: float
    amber: float
    interval: str
    aggregation: str
    retired: bool = False


_EVOLVE: dict[type[events.Event], Callable[[Kpi, Any], Kpi]] = {
    events.KpiRevised: lambda s, e: replace(s, name=e.name if e.name is not None else s.name),
    events.KpiRetargeted: lambda s, e: replace(s, target=e.target, amber=e.amber),
    events.KpiRetired: lambda s, e: replace(s, retired=True),
}


def fold(stream: Iterable[events.Event]) -> Kpi | None:
    """The KPI after its events, or None when the stream is not a KPI."""
    state: Kpi | None = None
    for event in stream:
        if state is None:
            if not isinstance(event, events.KpiDefined):
                return None
            state = Kpi(
                id=event.stream_id,
                org_id=event.org_id,
                version=event.stream_version,
                last_hash=event.hash,
                name=event.name,
                direction=event.direction,
                target=event.target,
                amber=event.amber,
                interval=event.interval,
                aggregation=event.aggregation,
            )
            continue
        step = _EVOLVE.get(type(event))
        if step is None:
            raise TypeError(f"{event.type} does not belong on a KPI stream")
        state = replace(step(state, event), version=event.stream_version, last_hash=event.hash)
    return state


def default_interval_amber(
    direction: str, target: float, interval: str | None, amber: float | None
) -> tuple[str, float]:
    """Interval (default weekly) and amber (default per API.md) of a promoted KPI."""
    if amber is None:
        amber = default_amber(direction, target)
    else:
        _amber_fits(direction, target, amber)
    return interval or DEFAULT_PROMOTED_INTERVAL, amber


def _amber_fits(direction: str, target: float, amber: float) -> None:
    try:
        check_amber(direction, target, amber)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def define(fields: Mapping[str, Any]) -> list[Pending]:
    """kpi.defined; amber defaults to `default_amber`: 90 % (increase) / 110 % (decrease) of
    a positive target, and on the losing side of any target (increase with -100: -110)."""
    payload = dict(fields)
    if payload.get("amber") is None:
        payload["amber"] = default_amber(payload["direction"], payload["target"])
    return [(events.KpiDefined, payload)]


def _live(s: Kpi) -> None:
    if s.retired:
        raise Refused("the KPI is retired")


def revise(s: Kpi, changes: Mapping[str, Any]) -> list[Pending]:
    """kpi.revised (name/owner/description) and/or kpi.retargeted (target/amber)."""
    _live(s)
    decided: list[Pending] = []
    revised = {
        k: changes[k] for k in ("name", "owner", "description") if changes.get(k) is not None
    }
    if revised:
        decided.append((events.KpiRevised, {**revised, "reason": changes.get("reason")}))
    target, amber = changes.get("target"), changes.get("amber")
    if target is not None or amber is not None:
        new_target = target if target is not None else s.target
        if amber is None:
            amber = _amber_for(s, new_target)
        else:
            _amber_fits(s.direction, new_target, amber)
        decided.append(
            (
                events.KpiRetargeted,
                {"target": new_target, "amber": amber, "reason": changes.get("reason")},
            )
        )
    if not decided:
        raise Invalid("nothing to change")
    return decided


def _amber_for(s: Kpi, target: float) -> float:
    """The amber of a retargeting that gives none: the default one follows the target; one
    that was chosen (not the default of the current target) stays, if it still lies on the
    losing side of the new target (else Invalid: the caller must give one)."""
    if s.amber == default_amber(s.direction, s.target):
        return default_amber(s.direction, target)
    try:
        check_amber(s.direction, target, s.amber)
    except ValueError:
        raise Invalid(
            f"the KPI's amber threshold {s.amber} does not fit the new target {target}"
            " (it must lie on the losing side of it): give an amber with the target"
        ) from None
    return s.amber


def retire(s: Kpi, reason: str | None) -> list[Pending]:
    _live(s)
    return [(events.KpiRetired, {"reason": reason})]

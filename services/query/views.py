"""Rows of the projection store → the views of API.md "Reads".

Time passes between the processor's last write and a read, so the time-dependent numbers
of an active objective (expected, health, status, forecast) and a KPI's current bucket,
status and staleness are evaluated at request time with the projections/ functions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson

from projections.kpi import (
    Accumulator,
    KpiTarget,
    bucket_end,
    bucket_start,
    is_stale,
    kpi_status,
    parse_total,
    scaled,
)
from projections.periods import Period
from projections.policy import DEFAULT_POLICY, ScoringPolicy
from projections.scoring import KeyResultScore, score_objective, status_of
from services.projectionstore.schema import iso, parse_iso

OBJECTIVE_COLUMNS = (
    "objective_id, org_id, title, description, owner, level, parent_id, period_start,"
    " period_end, state, version, score, progress, rollup_score, expected, health, status,"
    " forecast, zone, policy_version, evaluated_at, created_at, updated_at, closed_at, position"
)
KR_COLUMNS = (
    "kr_id, objective_id, org_id, ordinal, title, kind, unit, start, target, comparison,"
    " weight, kpi_id, aggregation, current, progress, score, confidence, done, removed,"
    " updated_at"
)
KPI_COLUMNS = (
    "kpi_id, org_id, name, unit, direction, target, amber, interval, aggregation, owner,"
    " description, state, version, created_at, updated_at, last_reading_at, position"
)
DAY_COLUMNS = "day, count, total, minimum, maximum, last_at, last_value, last_key, exact_total"
DETECTION_COLUMNS = (
    "detection_id, org_id, kind, reason, subject_type, subject_id, period, detected_at,"
    " resolved_at, policy_version, evidence"
)


def key_result_view(row: tuple[Any, ...]) -> dict[str, Any]:
    (kr_id, _obj, _org, _ord, title, kind, unit, start, target, comparison, weight,
     kpi_id, aggregation, current, progress, score, confidence, _done, _removed,
     updated_at) = row  # fmt: skip
    return {
        "id": kr_id,
        "title": title,
        "kind": kind,
        "unit": unit,
        "start": start,
        "target": target,
        "comparison": comparison,
        "weight": weight,
        "kpi_id": kpi_id,
        "aggregation": aggregation,
        "current": current,
        "progress": progress,
        "score": score,
        "confidence": confidence,
        "updated_at": updated_at,
    }


def objective_view(
    row: tuple[Any, ...],
    key_results: list[tuple[Any, ...]],
    children: list[str],
    now: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """The objective view; an active objective's pace numbers are evaluated at `now`."""
    (objective_id, _org, title, description, owner, level, parent_id, period_start,
     period_end, state, version, score, progress, rollup_score, expected, health, status,
     forecast, zone, policy_version, evaluated_at, *_rest) = row  # fmt: skip
    if state == "active":
        period = Period(date.fromisoformat(period_start), date.fromisoformat(period_end))
        scored = [
            (float(kr[10]), KeyResultScore(float(kr[14]), float(kr[15]), kr[13]))
            for kr in key_results
        ]
        now_score = score_objective(scored, period, now, policy)
        # The stored score is authoritative (the processor's fold); only the pace moves.
        expected = now_score.expected
        health = None if expected == 0 else score / expected
        status = status_of(score, expected, policy)
        forecast = (
            min(1.0, progress / expected)
            if expected > 0 and expected >= policy.forecast_min_expected
            else None
        )
        policy_version = now_score.policy_version
        evaluated_at = iso(now)
    return {
        "id": objective_id,
        "title": title,
        "description": description,
        "owner": owner,
        "level": level,
        "parent_id": parent_id,
        "period": {"start": period_start, "end": period_end},
        "state": state,
        "version": version,
        "score": score,
        "progress": progress,
        "rollup_score": rollup_score,
        "expected": expected,
        "health": health,
        "status": status,
        "forecast": forecast,
        "zone": zone,
        "policy_version": policy_version,
        "evaluated_at": evaluated_at,
        "children": children,
        "key_results": [key_result_view(kr) for kr in key_results],
    }


def accumulator_of(day: tuple[Any, ...]) -> Accumulator:
    """A kpi_days row (DAY_COLUMNS) as the Accumulator the processor folded.

    `exact_total` ("num/den", projections.kpi.total_text) is the exact sum; `total` (its
    float) is the fallback for rows written without it.
    """
    _day, count, total, minimum, maximum, last_at, last_value, last_key, exact = day
    if int(count) == 0:
        return Accumulator.empty()
    exact_total = parse_total(exact) if exact and exact != "0" else scaled(float(total))
    return Accumulator(
        count=int(count),
        scaled_total=exact_total,
        minimum=minimum,
        maximum=maximum,
        last_at=parse_iso(last_at) if last_at else None,
        last_value=last_value,
        last_key=last_key,
    )


def merge_days(days: list[tuple[Any, ...]]) -> Accumulator:
    acc = Accumulator.empty()
    for day in days:
        acc = acc.merge(accumulator_of(day))
    return acc


def bucket_of_day(day: str, interval: str) -> datetime:
    return bucket_start(parse_iso(f"{day}T00:00:00.000000Z"), interval)  # type: ignore[arg-type]


def kpi_view(
    row: tuple[Any, ...], days_in_bucket: list[tuple[Any, ...]], now: datetime, force: KpiTarget
) -> dict[str, Any]:
    """The KPI view at `now`: current bucket value (merge of its days; None without readings,
    whatever the aggregation), its status against `force` (the target in force at `now`,
    by valid time) and staleness."""
    (kpi_id, _org, name, unit, direction, _target, _amber, interval, aggregation, owner,
     description, state, version, created_at, _updated_at, last_reading_at,
     _pos) = row  # fmt: skip
    acc = merge_days(days_in_bucket)
    # The processor's rule: a bucket without readings has no value (no_data), count too.
    value = acc.value(aggregation) if acc.count else None
    stale = state == "active" and is_stale(
        parse_iso(last_reading_at) if last_reading_at else None,
        parse_iso(created_at),
        interval,
        now,
    )
    return {
        "id": kpi_id,
        "name": name,
        "unit": unit,
        "direction": direction,
        "target": force.target,
        "amber": force.amber,
        "interval": interval,
        "aggregation": aggregation,
        "current": value,
        "status": kpi_status(value, direction, force.target, force.amber),
        "last_reading_at": last_reading_at,
        "stale": stale,
        "policy_version": DEFAULT_POLICY.version,  # the status and staleness rules' version
        "version": version,
        "state": state,
        "owner": owner,
        "description": description,
    }


def current_bucket_days(interval: str, now: datetime) -> tuple[str, str]:
    """[first day, day after last) of the bucket holding `now`, as YYYY-MM-DD text."""
    start = bucket_start(now, interval)  # type: ignore[arg-type]
    end = bucket_end(start, interval)  # type: ignore[arg-type]
    return start.date().isoformat(), end.date().isoformat()


def detection_view(row: tuple[Any, ...]) -> dict[str, Any]:
    (detection_id, _org, kind, reason, subject_type, subject_id, period, detected_at,
     resolved_at, policy_version, evidence) = row  # fmt: skip
    return {
        "id": detection_id,
        "kind": kind,
        "reason": reason,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "period": period,
        "detected_at": detected_at,
        "resolved_at": resolved_at,
        "policy_version": policy_version,
        "evidence": orjson.loads(evidence) if evidence else {},
    }

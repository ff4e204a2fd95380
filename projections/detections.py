"""Over- and under-reach detection rules (API.md "Detections").

Each rule returns the findings whose condition holds now. The caller keeps the active
detections and calls `diff_findings` to raise the new ones and resolve those that
stopped holding, so a detection is raised once per (subject, kind, reason, period).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from projections.kpi import Direction, Interval, is_stale, kpi_status, stale_since
from projections.periods import Period, as_utc
from projections.policy import DEFAULT_POLICY, ScoringPolicy
from projections.scoring import KeyResultInput, ObjectiveScore, metric_progress

DetectionKind = Literal["over_reach", "under_reach", "kpi_breach", "stale_kpi"]
DetectionReason = Literal[
    "forecast", "final", "achieved_early", "target_already_met", "chronic", "red", "no_data"
]
SubjectType = Literal["objective", "key_result", "kpi", "owner"]
ObjectiveState = Literal["active", "closed", "archived"]
Evidence = dict[str, float | str | None]


@dataclass(frozen=True, slots=True, order=True)
class DetectionKey:
    """Identity of a detection: raised at most once while it holds.

    `period`: "2026-01-01/2026-03-31" for objective and key result rules, the bucket start
    (RFC 3339, e.g. "2026-01-05T00:00:00Z") for kpi_breach, "" when not applicable.
    """

    kind: DetectionKind
    reason: DetectionReason
    subject_type: SubjectType
    subject_id: str
    period: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now, with the numbers that triggered it (`evidence`)."""

    key: DetectionKey
    evidence: Evidence = field(hash=False)
    policy_version: str = DEFAULT_POLICY.version


def _rfc3339(t: datetime) -> str:
    return as_utc(t).isoformat().replace("+00:00", "Z")


def objective_findings(
    objective_id: str,
    owner: str,
    state: ObjectiveState,
    period: Period,
    score: ObjectiveScore,
    at: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> list[Finding]:
    """Objective rules holding at `at` for `score` (computed at `at`):

    over_reach/forecast: active, expected >= 0.25 and forecast < 0.7.
    over_reach/final: closed, or period ended (at >= period.ends_at), with score < 0.7.
    under_reach/achieved_early: active, score >= 1 while expected < 0.5.
    under_reach/final: closed, or period ended, with score >= 1.
    Archived objectives hold none.
    """
    if state == "archived":
        return []
    active = state == "active"
    ended = state == "closed" or as_utc(at, "at") >= period.ends_at
    evidence: Evidence = {
        "owner": owner,
        "state": state,
        "score": score.score,
        "progress": score.progress,
        "expected": score.expected,
        "forecast": score.forecast,
    }

    def finding(kind: DetectionKind, reason: DetectionReason, threshold: float) -> Finding:
        key = DetectionKey(kind, reason, "objective", objective_id, period.iso)
        return Finding(key, {**evidence, "threshold": threshold}, policy.version)

    found: list[Finding] = []
    if (
        active
        and score.expected >= policy.over_reach_forecast_min_expected
        and score.forecast is not None
        and score.forecast < policy.over_reach_forecast_below
    ):
        found.append(finding("over_reach", "forecast", policy.over_reach_forecast_below))
    if ended and score.score < policy.final_fail_below:
        found.append(finding("over_reach", "final", policy.final_fail_below))
    if (
        active
        and score.score >= policy.achieved_at
        and score.expected < policy.under_reach_early_expected_below
    ):
        found.append(finding("under_reach", "achieved_early", policy.achieved_at))
    if ended and score.score >= policy.final_under_reach_at:
        found.append(finding("under_reach", "final", policy.final_under_reach_at))
    return found


def target_already_met(
    kr: KeyResultInput,
    objective_id: str,
    period: Period,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> Finding | None:
    """under_reach/target_already_met for a KPI-linked metric key result, or None.

    Holds when `kr.current` (the KPI's aggregation, not None) already meets the target:
    metric progress p >= 1. Call it when the KR is added or re-targeted (and to re-check
    whether it still holds). Milestone and maintain KRs never hold it: keeping an
    already-met level is what a maintain KR is for.
    """
    if kr.kind != "metric" or kr.current is None:
        return None
    assert kr.start is not None
    assert kr.target is not None
    p = metric_progress(kr.start, kr.target, kr.current)
    if p < 1:
        return None
    key = DetectionKey("under_reach", "target_already_met", "key_result", kr.id, period.iso)
    evidence: Evidence = {
        "objective_id": objective_id,
        "start": kr.start,
        "target": kr.target,
        "current": kr.current,
        "progress": p,
    }
    return Finding(key, evidence, policy.version)


def chronic_findings(
    owner: str,
    closed_scores_in_close_order: Sequence[float],
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> list[Finding]:
    """Owner rules over the final scores of the owner's closed objectives, oldest first.

    over_reach/chronic: the last two both < 0.7; under_reach/chronic: both >= 1.
    """
    if len(closed_scores_in_close_order) < 2:
        return []
    previous, last = closed_scores_in_close_order[-2], closed_scores_in_close_order[-1]
    evidence: Evidence = {"previous_score": previous, "last_score": last}
    if previous < policy.final_fail_below and last < policy.final_fail_below:
        key = DetectionKey("over_reach", "chronic", "owner", owner, "")
        return [Finding(key, {**evidence, "threshold": policy.final_fail_below}, policy.version)]
    if previous >= policy.final_under_reach_at and last >= policy.final_under_reach_at:
        key = DetectionKey("under_reach", "chronic", "owner", owner, "")
        threshold = policy.final_under_reach_at
        return [Finding(key, {**evidence, "threshold": threshold}, policy.version)]
    return []


def kpi_findings(
    kpi_id: str,
    direction: Direction,
    target: float,
    amber: float,
    current_bucket_start: datetime,
    current_bucket_value: float | None,
    last_reading_at: datetime | None,
    created_at: datetime,
    interval: Interval,
    at: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> list[Finding]:
    """KPI rules holding at `at`:

    kpi_breach/red: the current bucket's value is red (period = its bucket start).
    stale_kpi/no_data: no reading for stale_factor x interval since the last reading
    (or since `created_at`).
    """
    found: list[Finding] = []
    if kpi_status(current_bucket_value, direction, target, amber) == "red":
        bucket = _rfc3339(current_bucket_start)
        key = DetectionKey("kpi_breach", "red", "kpi", kpi_id, bucket)
        evidence: Evidence = {
            "value": current_bucket_value,
            "target": target,
            "amber": amber,
            "direction": direction,
            "bucket_start": bucket,
        }
        found.append(Finding(key, evidence, policy.version))
    if is_stale(last_reading_at, created_at, interval, at, policy):
        key = DetectionKey("stale_kpi", "no_data", "kpi", kpi_id, "")
        evidence = {
            "last_reading_at": None if last_reading_at is None else _rfc3339(last_reading_at),
            "created_at": _rfc3339(created_at),
            "stale_since": _rfc3339(stale_since(last_reading_at, created_at, interval, policy)),
            "interval": interval,
            "stale_factor": policy.stale_factor,
        }
        found.append(Finding(key, evidence, policy.version))
    return found


def diff_findings(
    active: Collection[DetectionKey], holding: Iterable[Finding]
) -> tuple[list[Finding], list[DetectionKey]]:
    """(to raise, to resolve): findings whose key is not active yet, in `holding` order
    (first per key), and active keys no longer held, sorted.

    `active` (a set, or a mapping keyed by DetectionKey) must cover exactly the subjects
    whose rules produced `holding`, or unrelated detections would be resolved.
    """
    raised: list[Finding] = []
    held: set[DetectionKey] = set()
    for f in holding:
        if f.key not in held and f.key not in active:
            raised.append(f)
        held.add(f.key)
    resolved = sorted(k for k in active if k not in held)
    return raised, resolved

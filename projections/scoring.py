"""Scoring policy v1: key result and objective scores, status, forecast, zone, rollup."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, assert_never

from projections.periods import Period, expected_progress
from projections.policy import DEFAULT_POLICY, ScoringPolicy

KeyResultKind = Literal["metric", "milestone", "maintain"]
Comparison = Literal["at_least", "at_most"]
ObjectiveStatus = Literal["achieved", "not_started", "on_track", "behind", "at_risk"]
Zone = Literal["fail", "commit", "target", "stretch"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation of a maintain key result: its `value` and the `target` in force when
    it was observed (both in the KR's unit), so a later retargeting leaves it judged as it
    was."""

    value: float
    target: float


@dataclass(frozen=True, slots=True)
class KeyResultInput:
    """What scoring needs of one key result, as in force at the evaluation time.

    `current`: the measured value (KPI aggregation) or latest check-in value; None = none
    yet. `done`: a milestone's latest check-in. `observations`: a maintain KR's bucket
    values (KPI-linked) or check-in values inside the period, each with the target in force
    at its time (`target` is the one in force at the evaluation time).
    """

    id: str
    kind: KeyResultKind
    weight: float
    start: float | None
    target: float | None
    comparison: Comparison | None
    current: float | None
    done: bool | None
    observations: tuple[Observation, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"key result {self.id}: weight must be finite and > 0")
        if self.kind == "metric" and (self.start is None or self.target is None):
            raise ValueError(f"metric key result {self.id} needs start and target")
        if self.kind == "maintain" and (self.target is None or self.comparison is None):
            raise ValueError(f"maintain key result {self.id} needs target and comparison")


@dataclass(frozen=True, slots=True)
class KeyResultScore:
    """progress p >= 0 (uncapped for metrics), score in [0, 1], and the current value used."""

    progress: float
    score: float
    current: float | None


@dataclass(frozen=True, slots=True)
class ObjectiveScore:
    """An objective's view numbers (API.md "Scoring policy v1"); all ratios, unitless.

    health is None when expected is 0; forecast is None while expected < the policy's
    forecast_min_expected.
    """

    score: float
    progress: float
    expected: float
    health: float | None
    status: ObjectiveStatus
    forecast: float | None
    zone: Zone
    policy_version: str


def metric_progress(start: float, target: float, current: float) -> float:
    """Metric progress p = (current - start) / (target - start), floored at 0, not capped.

    Works for decreasing targets (target < start). When target == start there is no
    direction to measure in: p = 1.0 if current == target, else 0.0.
    """
    if target == start:
        return 1.0 if current == target else 0.0
    # `+ 0.0` normalises -0.0 to 0.0.
    return max(0.0, (current - start) / (target - start)) + 0.0


def meets(value: float, comparison: Comparison, threshold: float) -> bool:
    """Whether `value` meets `threshold`: at_least is value >= threshold, at_most <=."""
    if comparison == "at_least":
        return value >= threshold
    if comparison == "at_most":
        return value <= threshold
    assert_never(comparison)


def score_key_result(kr: KeyResultInput) -> KeyResultScore:
    """Score one key result (API.md "Scoring policy v1"); progress and score are ratios.

    metric: current defaults to start; p = metric_progress(...); score = min(p, 1).
    milestone: score = progress = 1 if the latest check-in is done, else 0.
    maintain: score = progress = share of observations meeting the threshold in force at
    their own time (Observation.target); none -> 0.
    """
    if kr.kind == "metric":
        assert kr.start is not None
        assert kr.target is not None
        current = kr.start if kr.current is None else kr.current
        p = metric_progress(kr.start, kr.target, current)
        return KeyResultScore(progress=p, score=min(p, 1.0), current=current)
    if kr.kind == "milestone":
        s = 1.0 if kr.done else 0.0
        return KeyResultScore(progress=s, score=s, current=kr.current)
    if kr.kind == "maintain":
        assert kr.comparison is not None
        comparison = kr.comparison
        if not kr.observations:
            return KeyResultScore(progress=0.0, score=0.0, current=kr.current)
        met = sum(1 for o in kr.observations if meets(o.value, comparison, o.target))
        share = met / len(kr.observations)
        return KeyResultScore(progress=share, score=share, current=kr.current)
    assert_never(kr.kind)


def zone_of(score: float, policy: ScoringPolicy = DEFAULT_POLICY) -> Zone:
    """Zone by score: fail < 0.3 <= commit < 0.7 <= target < 1.0 <= stretch (policy v1)."""
    if score < policy.zone_commit:
        return "fail"
    if score < policy.zone_target:
        return "commit"
    if score < policy.zone_stretch:
        return "target"
    return "stretch"


def status_of(
    score: float, expected: float, policy: ScoringPolicy = DEFAULT_POLICY
) -> ObjectiveStatus:
    """Status: achieved if score >= 1; not_started if e = 0; else by health = score / e.

    on_track if health >= 0.95, behind if health >= 0.85, at_risk otherwise (policy v1).
    """
    if score >= policy.achieved_at:
        return "achieved"
    if expected == 0:
        return "not_started"
    health = score / expected
    if health >= policy.on_track_health:
        return "on_track"
    if health >= policy.behind_health:
        return "behind"
    return "at_risk"


def weighted_mean(pairs: Sequence[tuple[float, float]]) -> float:
    """Sum of weight x value over sum of weights for (weight, value) pairs (finite floats);
    0.0 when empty.

    Exact, rounded once: so the result does not depend on the order of the pairs, and the
    mean of equal values is that value (weight 3 at 0.7 scores 0.7, where rounding each
    step gave 0.6999999999999998, below the policy's 0.7 thresholds). Equal weights cancel:
    the plain mean (`exact_mean`); others are computed in integers (a float is an integer
    over a power of two; int / int is correctly rounded).
    """
    if not all(math.isfinite(w) and math.isfinite(v) for w, v in pairs):
        # Not a score's inputs (those are bounded): the float formula's inf or nan.
        total = sum(w for w, _ in pairs)
        return 0.0 if total == 0 else sum(w * v for w, v in pairs) / total
    if not pairs:
        return 0.0
    first = pairs[0][0]
    if all(w == first for w, _ in pairs):
        return 0.0 if first == 0 else exact_mean([v for _, v in pairs])
    weights = [w.as_integer_ratio() for w, _ in pairs]
    w_den = max(d for _, d in weights)
    w_sum = sum(n * (w_den // d) for n, d in weights)
    if w_sum == 0:
        return 0.0
    products = [
        (wn * vn, wd * vd)
        for (wn, wd), (vn, vd) in zip(
            weights, (v.as_integer_ratio() for _, v in pairs), strict=True
        )
    ]
    p_den = max(d for _, d in products)
    p_sum = sum(n * (p_den // d) for n, d in products)
    return (p_sum * w_den) / (p_den * w_sum)


SMALL_MEAN = 16  # up to this many values, integers; beyond, an fsum expansion


def exact_mean(values: Sequence[float]) -> float:
    """The mean of finite floats, exact and rounded once (0.0 when empty). A rollup takes
    the mean of every child: for many values, the sum is taken as an expansion of floats
    whose exact sum it is (math.fsum, correctly rounded, then the same of what is left
    until nothing is), a few fsums instead of an integer per value (1000 children: 60 µs,
    where integers took 1 ms)."""
    n = len(values)
    if n == 0:
        return 0.0
    if n <= SMALL_MEAN:
        ratios = [v.as_integer_ratio() for v in values]
        den = max(d for _, d in ratios)
        return sum(k * (den // d) for k, d in ratios) / (den * n)
    terms: list[float] = []
    while True:
        rest = math.fsum([*values, *(-t for t in terms)])
        if rest == 0.0:
            break
        terms.append(rest)
    if len(terms) <= 1:
        total = terms[0] if terms else 0.0
        num, den = total.as_integer_ratio()
        return num / (den * n)
    ratios = [t.as_integer_ratio() for t in terms]
    den = max(d for _, d in ratios)
    return sum(k * (den // d) for k, d in ratios) / (den * n)


def score_objective(
    scored: Sequence[tuple[float, KeyResultScore]],
    period: Period,
    at: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> ObjectiveScore:
    """Score an objective at instant `at` from its (weight, key result score) pairs.

    score = sum w*s / sum w (0 with no KRs), progress likewise with p; expected = e(at);
    health = score / e (None when e = 0); forecast = min(1, progress / e) when
    e >= forecast_min_expected, else None. All values are unitless ratios.
    """
    score = weighted_mean([(w, s.score) for w, s in scored])
    progress = weighted_mean([(w, s.progress) for w, s in scored])
    expected = expected_progress(period, at)
    health = None if expected == 0 else score / expected
    forecast = (
        min(1.0, progress / expected)
        if expected > 0 and expected >= policy.forecast_min_expected
        else None
    )
    return ObjectiveScore(
        score=score,
        progress=progress,
        expected=expected,
        health=health,
        status=status_of(score, expected, policy),
        forecast=forecast,
        zone=zone_of(score, policy),
        policy_version=policy.version,
    )


MAX_ROLLUP_LEVELS = 1_000
"""The levels of an objective hierarchy a rollup spans (the objective itself is the first):
the processor propagates a change that many levels up, and a time-travel view walks that
many down. Parent cycles are refused on write; the bound keeps a cycle from looping."""


def rollup_score(own_score: float | None, child_rollups: Sequence[float]) -> float:
    """Mean of the objective's own score (None when it has no KRs) and each child's rollup.

    0.0 with neither. A ratio in [0, 1] when its inputs are.
    """
    values = ([] if own_score is None else [own_score]) + list(child_rollups)
    if not all(math.isfinite(v) for v in values):
        return sum(values) / len(values)  # not a score's: the float formula's inf or nan
    return exact_mean(values)

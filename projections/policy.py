"""Scoring policy: the thresholds of API.md "Scoring policy v1" and "Detections"."""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    """Every threshold the scoring and detection rules use; `version` is stamped on views.

    All thresholds are unitless ratios (scores, expected progress, health, forecast),
    except `stale_factor`, which multiplies a KPI's interval length.
    """

    version: str = "v1"
    # status: on_track if health >= on_track_health, behind if >= behind_health.
    on_track_health: float = 0.95
    behind_health: float = 0.85
    # forecast is only given once expected progress e >= forecast_min_expected.
    forecast_min_expected: float = 0.1
    # zone by score: fail < zone_commit <= commit < zone_target <= target < zone_stretch.
    zone_commit: float = 0.3
    zone_target: float = 0.7
    zone_stretch: float = 1.0
    # over_reach/forecast: active, e >= ..._min_expected and forecast < ..._below.
    over_reach_forecast_min_expected: float = 0.25
    over_reach_forecast_below: float = 0.7
    # under_reach/achieved_early: active, score >= achieved_at while e < this.
    under_reach_early_expected_below: float = 0.5
    # final and chronic: over_reach if score < final_fail_below,
    # under_reach if score >= final_under_reach_at.
    final_fail_below: float = 0.7
    final_under_reach_at: float = 1.0
    # stale_kpi: no reading for stale_factor x interval.
    stale_factor: float = 1.5
    # status "achieved" and under_reach/achieved_early: score >= achieved_at.
    achieved_at: float = 1.0

    def __post_init__(self) -> None:
        numbers = astuple(self)[1:]
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValueError("policy thresholds must be finite numbers")
        if not self.behind_health <= self.on_track_health:
            raise ValueError("behind_health must not exceed on_track_health")
        if not 0 <= self.zone_commit <= self.zone_target <= self.zone_stretch:
            raise ValueError("zones must satisfy 0 <= commit <= target <= stretch")
        if self.stale_factor <= 0:
            raise ValueError("stale_factor must be positive")


DEFAULT_POLICY = ScoringPolicy()

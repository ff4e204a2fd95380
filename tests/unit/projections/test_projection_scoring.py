import math
from datetime import UTC, date, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.kpi import aggregate
from projections.periods import Period
from projections.policy import ScoringPolicy
from projections.scoring import (
    Comparison,
    KeyResultInput,
    KeyResultScore,
    Observation,
    metric_progress,
    rollup_score,
    score_key_result,
    score_objective,
    status_of,
    zone_of,
)

Q1 = Period(date(2026, 1, 1), date(2026, 3, 31))
MID_Q1 = datetime(2026, 2, 15, tzinfo=UTC)


def metric(
    start: float, target: float, current: float | None, weight: float = 1.0
) -> KeyResultInput:
    return KeyResultInput("m", "metric", weight, start, target, None, current, None)


def maintain(
    comparison: Comparison, target: float, observations: tuple[float, ...]
) -> KeyResultInput:
    """A maintain KR whose observations were all made under `target`."""
    judged = tuple(Observation(v, target) for v in observations)
    return KeyResultInput("k", "maintain", 1.0, None, target, comparison, None, None, judged)


def milestone(done: bool | None) -> KeyResultInput:
    return KeyResultInput("s", "milestone", 1.0, None, None, None, None, done)


def test_api_worked_example() -> None:
    kpi_current = aggregate(
        [
            (4.0, datetime(2026, 1, 10, tzinfo=UTC), "r1"),
            (8.0, datetime(2026, 2, 1, tzinfo=UTC), "r2"),
        ],
        "avg",
    )
    assert kpi_current == 6.0
    a = KeyResultInput("A", "metric", 1.0, 100.0, 50.0, None, 80.0, None)
    b = KeyResultInput("B", "milestone", 1.0, None, None, None, None, True)
    c = KeyResultInput("C", "metric", 2.0, 0.0, 10.0, None, kpi_current, None)
    sa, sb, sc = score_key_result(a), score_key_result(b), score_key_result(c)
    assert (sa.progress, sa.score) == (0.4, 0.4)
    assert (sb.progress, sb.score) == (1.0, 1.0)
    assert (sc.progress, sc.score, sc.current) == (0.6, 0.6, 6.0)

    view = score_objective([(1.0, sa), (1.0, sb), (2.0, sc)], Q1, MID_Q1)

    assert view.score == 0.65
    assert view.progress == 0.65
    assert view.expected == 0.5
    assert view.health == 1.3
    assert view.status == "on_track"
    assert view.forecast == 1.0
    assert view.zone == "commit"
    assert view.policy_version == "v1"


# --- key results ---------------------------------------------------------------------


def test_metric_decreasing_target() -> None:
    assert score_key_result(metric(100, 50, 80)) == KeyResultScore(0.4, 0.4, 80)
    assert score_key_result(metric(100, 50, 50)) == KeyResultScore(1.0, 1.0, 50)
    # Overshooting a decreasing target: progress uncapped, score capped.
    assert score_key_result(metric(100, 50, 25)) == KeyResultScore(1.5, 1.0, 25)
    # Going the wrong way floors at 0.
    assert score_key_result(metric(100, 50, 120)) == KeyResultScore(0.0, 0.0, 120)


def test_metric_increasing_target_floor_and_overshoot() -> None:
    assert score_key_result(metric(0, 10, 15)) == KeyResultScore(1.5, 1.0, 15)
    assert score_key_result(metric(10, 20, 5)) == KeyResultScore(0.0, 0.0, 5)


def test_metric_without_current_uses_start() -> None:
    assert score_key_result(metric(100, 50, None)) == KeyResultScore(0.0, 0.0, 100)


def test_metric_target_equal_to_start_needs_exact_hit() -> None:
    assert metric_progress(5, 5, 5) == 1.0
    assert metric_progress(5, 5, 6) == 0.0
    assert metric_progress(5, 5, 4) == 0.0
    assert score_key_result(metric(5, 5, None)).score == 1.0  # current defaults to start


def test_progress_floor_is_positive_zero() -> None:
    assert str(metric_progress(10, 20, 10)) == "0.0"


def test_milestone() -> None:
    assert score_key_result(milestone(True)) == KeyResultScore(1.0, 1.0, None)
    assert score_key_result(milestone(False)).score == 0.0
    assert score_key_result(milestone(None)).score == 0.0


def test_maintain_share_of_observations_meeting_threshold() -> None:
    # at_least: equality meets.
    assert score_key_result(maintain("at_least", 99.9, (99.9, 100.0, 99.8, 99.0))).score == 0.5
    # at_most: equality meets.
    kr = maintain("at_most", 200.0, (200.0, 150.0, 201.0, 199.0, 250.0))
    assert score_key_result(kr) == KeyResultScore(0.6, 0.6, None)
    assert score_key_result(maintain("at_least", 1.0, ())).score == 0.0


def test_maintain_judges_each_observation_by_the_target_in_force_at_its_time() -> None:
    # Two observations of 90 made under target 100, two under 80; the target now is 80.
    observations = tuple(Observation(90.0, t) for t in (100.0, 100.0, 80.0, 80.0))
    kr = KeyResultInput("k", "maintain", 1.0, None, 80.0, "at_least", 90.0, None, observations)
    assert score_key_result(kr) == KeyResultScore(0.5, 0.5, 90.0)
    at_most = KeyResultInput(
        "k", "maintain", 1.0, None, 5.0, "at_most", None, None,
        (Observation(7.0, 8.0), Observation(7.0, 5.0)),
    )  # fmt: skip
    assert score_key_result(at_most).score == 0.5


@pytest.mark.parametrize(
    "bad",
    [
        lambda: KeyResultInput("x", "metric", 1.0, None, 10.0, None, None, None),
        lambda: KeyResultInput("x", "metric", 1.0, 0.0, None, None, None, None),
        lambda: KeyResultInput("x", "maintain", 1.0, None, 10.0, None, None, None),
        lambda: KeyResultInput("x", "milestone", 0.0, None, None, None, None, None),
        lambda: KeyResultInput("x", "milestone", -1.0, None, None, None, None, None),
        lambda: KeyResultInput("x", "milestone", float("inf"), None, None, None, None, None),
    ],
)
def test_invalid_key_results_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="key result"):
        bad()  # type: ignore[operator]


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@given(finite, finite, st.one_of(st.none(), finite))
def test_metric_score_in_unit_interval_and_progress_non_negative(
    start: float, target: float, current: float | None
) -> None:
    s = score_key_result(metric(start, target, current))
    assert 0.0 <= s.score <= 1.0
    assert s.progress >= 0.0
    assert s.score == min(s.progress, 1.0)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=100),
            st.floats(min_value=0, max_value=1),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=8,
    ),
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    st.data(),
)
def test_objective_score_bounded_and_order_independent(
    krs: list[tuple[float, float, float]], at: datetime, data: st.DataObject
) -> None:
    # A real KR's progress is never below its score; keep the inputs consistent with that.
    scored = [(w, KeyResultScore(max(p, s), s, None)) for w, s, p in krs]
    view = score_objective(scored, Q1, at)
    assert 0.0 <= view.score <= 1.0
    assert view.progress >= 0.0
    assert 0.0 <= view.expected <= 1.0
    assert view.forecast is None or 0.0 <= view.forecast <= 1.0
    assert score_objective(data.draw(st.permutations(scored)), Q1, at) == view


def test_objective_without_key_results() -> None:
    view = score_objective([], Q1, MID_Q1)
    assert (view.score, view.progress) == (0.0, 0.0)
    assert view.status == "at_risk"
    assert view.zone == "fail"
    assert view.forecast == 0.0


def test_objective_before_period_not_started_without_health_or_forecast() -> None:
    view = score_objective(
        [(1.0, KeyResultScore(0.5, 0.5, None))], Q1, datetime(2025, 12, 1, tzinfo=UTC)
    )
    assert view.expected == 0.0
    assert view.health is None
    assert view.forecast is None
    assert view.status == "not_started"


def test_achieved_wins_over_not_started() -> None:
    view = score_objective(
        [(1.0, KeyResultScore(1.0, 1.0, None))], Q1, datetime(2025, 12, 1, tzinfo=UTC)
    )
    assert view.status == "achieved"
    assert view.zone == "stretch"


def test_forecast_threshold_and_cap() -> None:
    # e = 9/90 = 0.1 exactly at Jan 10: forecast given; a microsecond earlier: not.
    at = datetime(2026, 1, 10, tzinfo=UTC)
    kr = [(1.0, KeyResultScore(0.05, 0.05, None))]
    assert score_objective(kr, Q1, at).forecast == pytest.approx(0.5)
    assert score_objective(kr, Q1, datetime(2026, 1, 9, 23, 59, 59, tzinfo=UTC)).forecast is None
    # Forecast uses progress, not score, and caps at 1.
    ahead = [(1.0, KeyResultScore(3.0, 1.0, None))]
    assert score_objective(ahead, Q1, MID_Q1).forecast == 1.0
    behind = [(1.0, KeyResultScore(0.25, 0.25, None))]
    assert score_objective(behind, Q1, MID_Q1).forecast == 0.5


@pytest.mark.parametrize(
    ("score", "expected", "status"),
    [
        (1.0, 0.5, "achieved"),
        (0.9999, 1.0, "on_track"),
        (0.0, 0.0, "not_started"),
        (0.95, 1.0, "on_track"),
        (0.9499, 1.0, "behind"),
        (0.85, 1.0, "behind"),
        (0.8499, 1.0, "at_risk"),
        (0.0, 0.5, "at_risk"),
    ],
)
def test_status_boundaries(score: float, expected: float, status: str) -> None:
    assert status_of(score, expected) == status


@pytest.mark.parametrize(
    ("score", "zone"),
    [
        (0.0, "fail"),
        (0.2999, "fail"),
        (0.3, "commit"),
        (0.6999, "commit"),
        (0.7, "target"),
        (0.9999, "target"),
        (1.0, "stretch"),
    ],
)
def test_zone_boundaries(score: float, zone: str) -> None:
    assert zone_of(score) == zone


def test_policy_thresholds_are_used_and_version_stamped() -> None:
    strict = ScoringPolicy(version="v1-strict", on_track_health=1.0, zone_target=0.9)
    view = score_objective([(1.0, KeyResultScore(0.48, 0.48, None))], Q1, MID_Q1, strict)
    assert view.status == "behind"  # health 0.96 < 1.0
    assert view.policy_version == "v1-strict"
    assert zone_of(0.8, strict) == "commit"
    assert (
        score_objective([(1.0, KeyResultScore(0.48, 0.48, None))], Q1, MID_Q1).status == "on_track"
    )


def test_policy_rejects_inconsistent_thresholds() -> None:
    with pytest.raises(ValueError, match="behind_health"):
        ScoringPolicy(behind_health=0.99)
    with pytest.raises(ValueError, match="zones"):
        ScoringPolicy(zone_commit=0.8)
    with pytest.raises(ValueError, match="finite"):
        ScoringPolicy(stale_factor=float("nan"))


def test_weights_matter() -> None:
    scored = [(3.0, KeyResultScore(1.0, 1.0, None)), (1.0, KeyResultScore(0.0, 0.0, None))]
    assert score_objective(scored, Q1, MID_Q1).score == 0.75


_weights = st.floats(min_value=1e-6, max_value=1e6)
_scores = st.floats(min_value=0.0, max_value=1.0)


@given(st.lists(st.tuples(_weights, _scores), min_size=1, max_size=8))
def test_the_weighted_mean_is_the_exact_mean_rounded_once(
    pairs: list[tuple[float, float]],
) -> None:
    scored = [(w, KeyResultScore(s, s, None)) for w, s in pairs]
    exact = sum(Fraction(w) * Fraction(s) for w, s in pairs) / sum(Fraction(w) for w, _ in pairs)
    assert score_objective(scored, Q1, MID_Q1).score == float(exact)
    assert score_objective(scored[::-1], Q1, MID_Q1).score == float(exact)


@given(
    st.lists(
        st.one_of(_scores, st.floats(min_value=-1e15, max_value=1e15), st.sampled_from([0.7])),
        min_size=0,
        max_size=60,
    )
)
def test_a_rollup_is_the_exact_mean_rounded_once(values: list[float]) -> None:
    """Small and large (an fsum expansion) lists alike, in any order."""
    exact = float(sum(Fraction(v) for v in values) / len(values)) if values else 0.0
    assert rollup_score(None, values) == exact
    assert rollup_score(None, values[::-1]) == exact


def test_a_non_finite_input_gives_the_float_formulas_answer_not_an_error() -> None:
    # Scores are bounded, so this is not a score's input: the exact arithmetic must not
    # raise where the float formula gave inf or nan.
    inf = float("inf")
    assert rollup_score(None, [0.5, inf]) == inf
    assert math.isnan(rollup_score(None, [0.5, float("nan")]))
    assert math.isnan(rollup_score(None, [inf, -inf]))
    scored = [(1e308, KeyResultScore(inf, 0.5, None)), (1e308, KeyResultScore(0.5, 0.5, None))]
    assert math.isnan(score_objective(scored, Q1, MID_Q1).progress)  # huge weights: no raise


@given(_weights, st.integers(min_value=1, max_value=6), st.sampled_from([0.7, 0.3, 0.95, 1.0]))
def test_equal_scores_average_to_themselves_at_any_weight(
    weight: float, count: int, score: float
) -> None:
    """Weight 3 at 0.7 is 0.7, not 0.6999999999999998: the policy's thresholds (target
    zone, over_reach/final, chronic) sit exactly at such values."""
    scored = [(weight, KeyResultScore(score, score, None))] * count
    result = score_objective(scored, Q1, MID_Q1)
    assert result.score == score
    assert result.zone == zone_of(score)
    assert rollup_score(None, [score] * count) == score
    assert rollup_score(score, [score] * count) == score


# --- rollup --------------------------------------------------------------------------


def test_rollup_means_own_score_and_children() -> None:
    assert rollup_score(0.6, [0.2, 1.0]) == 0.6
    assert rollup_score(None, [0.2, 0.4]) == pytest.approx(0.3)
    assert rollup_score(0.9, []) == 0.9
    assert rollup_score(None, []) == 0.0
    # Own score of 0 (has KRs, none scored yet) counts; None (no KRs) does not.
    assert rollup_score(0.0, [1.0]) == 0.5
    assert rollup_score(None, [1.0]) == 1.0


def test_rollup_of_a_tree() -> None:
    leaf_a = rollup_score(1.0, [])
    leaf_b = rollup_score(0.0, [])
    middle = rollup_score(None, [leaf_a, leaf_b])  # 0.5
    assert rollup_score(0.8, [middle]) == pytest.approx(0.65)

from datetime import UTC, date, datetime, timedelta

import pytest

from projections.detections import (
    DetectionKey,
    Finding,
    ObjectiveState,
    chronic_findings,
    diff_findings,
    kpi_findings,
    objective_findings,
    target_already_met,
)
from projections.periods import Period
from projections.policy import ScoringPolicy
from projections.scoring import KeyResultInput, ObjectiveScore

Q1 = Period(date(2026, 1, 1), date(2026, 3, 31))
MID_Q1 = datetime(2026, 2, 15, tzinfo=UTC)
AFTER_Q1 = Q1.ends_at


def view(score: float, expected: float, forecast: float | None = None) -> ObjectiveScore:
    """An ObjectiveScore with the fields the rules read; the rest is irrelevant here."""
    return ObjectiveScore(
        score=score,
        progress=score,
        expected=expected,
        health=None if expected == 0 else score / expected,
        status="on_track",
        forecast=forecast,
        zone="commit",
        policy_version="v1",
    )


def reasons(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.key.kind, f.key.reason) for f in findings}


def check(
    score: ObjectiveScore, state: ObjectiveState = "active", at: datetime = MID_Q1
) -> set[tuple[str, str]]:
    return reasons(objective_findings("obj-1", "ana", state, Q1, score, at))


# --- over_reach / forecast: active, e >= 0.25, forecast < 0.7 -------------------------


@pytest.mark.parametrize(
    ("expected", "forecast", "holds"),
    [
        (0.25, 0.6999, True),
        (0.2499, 0.6999, False),  # too early to tell
        (0.25, 0.7, False),  # at the threshold: fine
        (0.5, 0.71, False),
        (0.5, 0.0, True),
    ],
)
def test_over_reach_forecast_boundaries(expected: float, forecast: float, holds: bool) -> None:
    assert (("over_reach", "forecast") in check(view(0.1, expected, forecast))) is holds


def test_over_reach_forecast_only_for_active_objectives() -> None:
    assert ("over_reach", "forecast") not in check(view(0.1, 0.5, 0.2), state="closed")


# --- final: closed, or period ended ---------------------------------------------------


@pytest.mark.parametrize(
    ("score", "found"),
    [
        (0.6999, {("over_reach", "final")}),
        (0.7, set()),
        (0.9999, set()),
        (1.0, {("under_reach", "final")}),
        (1.2, {("under_reach", "final")}),
    ],
)
def test_final_boundaries_when_closed(score: float, found: set[tuple[str, str]]) -> None:
    assert check(view(score, 0.5, 1.0), state="closed") == found


def test_final_holds_when_period_ended_even_if_not_closed() -> None:
    just_before = AFTER_Q1 - timedelta(microseconds=1)
    assert ("over_reach", "final") not in check(view(0.5, 1.0, 1.0), at=just_before)
    assert ("over_reach", "final") in check(view(0.5, 1.0, 1.0), at=AFTER_Q1)
    assert ("under_reach", "final") not in check(view(1.0, 1.0, 1.0), at=just_before)
    assert ("under_reach", "final") in check(view(1.0, 1.0, 1.0), at=AFTER_Q1)


def test_ended_active_objective_with_poor_forecast_holds_forecast_and_final() -> None:
    assert check(view(0.3, 1.0, 0.3), at=AFTER_Q1) == {
        ("over_reach", "forecast"),
        ("over_reach", "final"),
    }


# --- under_reach / achieved_early: active, score >= 1 while e < 0.5 --------------------


@pytest.mark.parametrize(
    ("score", "expected", "holds"),
    [
        (1.0, 0.4999, True),
        (0.9999, 0.2, False),
        (1.0, 0.5, False),
        (1.0, 0.0, True),
    ],
)
def test_achieved_early_boundaries(score: float, expected: float, holds: bool) -> None:
    assert (("under_reach", "achieved_early") in check(view(score, expected, 1.0))) is holds


def test_achieved_early_not_for_closed_objectives() -> None:
    assert check(view(1.0, 0.2, 1.0), state="closed") == {("under_reach", "final")}


def test_archived_objectives_hold_nothing() -> None:
    assert check(view(0.0, 1.0, 0.0), state="archived", at=AFTER_Q1) == set()
    assert check(view(1.0, 0.1, 1.0), state="archived") == set()


def test_objective_finding_identity_and_evidence() -> None:
    policy = ScoringPolicy(version="v1-test")
    [f] = objective_findings("obj-1", "ana", "closed", Q1, view(0.5, 1.0, 0.5), AFTER_Q1, policy)
    assert f.key == DetectionKey(
        "over_reach", "final", "objective", "obj-1", "2026-01-01/2026-03-31"
    )
    assert f.evidence["score"] == 0.5
    assert f.evidence["threshold"] == 0.7
    assert f.evidence["owner"] == "ana"
    assert f.policy_version == "v1-test"


# --- under_reach / target_already_met -------------------------------------------------


def metric_kr(start: float, target: float, current: float | None) -> KeyResultInput:
    return KeyResultInput("kr-1", "metric", 1.0, start, target, None, current, None)


@pytest.mark.parametrize(
    ("start", "target", "current", "holds"),
    [
        (0, 10, 10, True),
        (0, 10, 9.999, False),
        (0, 10, 12, True),
        (100, 50, 50, True),  # decreasing target met
        (100, 50, 50.001, False),
        (100, 50, 40, True),
        (5, 5, 5, True),
        (5, 5, 6, False),
        (0, 10, None, False),  # no measurement yet: cannot already be met
    ],
)
def test_target_already_met_boundaries(
    start: float, target: float, current: float | None, holds: bool
) -> None:
    found = target_already_met(metric_kr(start, target, current), "obj-1", Q1)
    assert (found is not None) is holds
    if found is not None:
        assert found.key == DetectionKey(
            "under_reach", "target_already_met", "key_result", "kr-1", "2026-01-01/2026-03-31"
        )
        assert found.evidence["current"] == current
        assert found.evidence["objective_id"] == "obj-1"


def test_target_already_met_ignores_maintain_and_milestone() -> None:
    maintain = KeyResultInput("k", "maintain", 1.0, None, 99.0, "at_least", 100.0, None, (100.0,))
    milestone = KeyResultInput("s", "milestone", 1.0, None, None, None, None, True)
    assert target_already_met(maintain, "obj-1", Q1) is None
    assert target_already_met(milestone, "obj-1", Q1) is None


# --- chronic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "found"),
    [
        ([], set()),
        ([0.1], set()),
        ([0.6999, 0.6999], {("over_reach", "chronic")}),
        ([0.6999, 0.7], set()),
        ([0.7, 0.1], set()),
        ([0.1, 0.1, 0.9], set()),  # only the last two count
        ([0.9, 0.1, 0.2], {("over_reach", "chronic")}),
        ([1.0, 1.0], {("under_reach", "chronic")}),
        ([1.0, 0.9999], set()),
        ([0.5, 1.2, 1.0], {("under_reach", "chronic")}),
    ],
)
def test_chronic_boundaries(scores: list[float], found: set[tuple[str, str]]) -> None:
    findings = chronic_findings("ana", scores)
    assert reasons(findings) == found
    for f in findings:
        assert f.key.subject_type == "owner"
        assert f.key.subject_id == "ana"
        assert f.evidence["last_score"] == scores[-1]


# --- KPI rules ------------------------------------------------------------------------

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
BUCKET = datetime(2026, 2, 2, tzinfo=UTC)


def kpi_reasons(
    value: float | None,
    direction: str = "increase",
    last_reading_at: datetime | None = None,
    at: datetime = BUCKET + timedelta(hours=1),
) -> set[tuple[str, str]]:
    target, amber = (100.0, 90.0) if direction == "increase" else (100.0, 110.0)
    found = kpi_findings(
        "kpi-1",
        direction,  # type: ignore[arg-type]
        target,
        amber,
        BUCKET,
        value,
        BUCKET if last_reading_at is None else last_reading_at,
        CREATED,
        "week",
        at,
    )
    return reasons(found)


@pytest.mark.parametrize(
    ("value", "direction", "red"),
    [
        (89.99, "increase", True),
        (90.0, "increase", False),
        (100.0, "increase", False),
        (110.01, "decrease", True),
        (110.0, "decrease", False),
        (50.0, "decrease", False),
        (None, "increase", False),  # no data is not a breach
    ],
)
def test_kpi_breach_boundaries(value: float | None, direction: str, red: bool) -> None:
    assert (("kpi_breach", "red") in kpi_reasons(value, direction)) is red


def test_kpi_breach_is_keyed_by_bucket_start() -> None:
    [f] = kpi_findings(
        "kpi-1", "increase", 100.0, 90.0, BUCKET, 10.0, BUCKET, CREATED, "week", BUCKET
    )
    assert f.key == DetectionKey("kpi_breach", "red", "kpi", "kpi-1", "2026-02-02T00:00:00Z")
    assert f.evidence["value"] == 10.0


def test_stale_kpi_boundaries() -> None:
    last = datetime(2026, 1, 20, tzinfo=UTC)
    limit = last + timedelta(days=10, hours=12)  # 1.5 weeks
    assert ("stale_kpi", "no_data") not in kpi_reasons(
        None, last_reading_at=last, at=limit - timedelta(seconds=1)
    )
    assert ("stale_kpi", "no_data") in kpi_reasons(None, last_reading_at=last, at=limit)


def test_stale_kpi_without_readings_counts_from_creation() -> None:
    found = kpi_findings(
        "kpi-1",
        "increase",
        100.0,
        90.0,
        BUCKET,
        None,
        None,
        CREATED,
        "day",
        CREATED + timedelta(hours=36),
    )
    assert [f.key for f in found] == [DetectionKey("stale_kpi", "no_data", "kpi", "kpi-1", "")]
    assert found[0].evidence["last_reading_at"] is None
    assert found[0].evidence["stale_since"] == "2026-01-02T12:00:00Z"
    early = kpi_findings(
        "kpi-1",
        "increase",
        100.0,
        90.0,
        BUCKET,
        None,
        None,
        CREATED,
        "day",
        CREATED + timedelta(hours=35),
    )
    assert early == []


# --- diff -----------------------------------------------------------------------------


def key(reason: str, subject: str = "obj-1") -> DetectionKey:
    return DetectionKey("over_reach", reason, "objective", subject, "p")  # type: ignore[arg-type]


def test_diff_raises_new_keeps_held_resolves_stopped() -> None:
    held = Finding(key("forecast"), {"forecast": 0.5})
    new = Finding(key("final"), {"score": 0.5})
    raised, resolved = diff_findings({key("forecast"), key("chronic")}, [held, new])
    assert raised == [new]
    assert resolved == [key("chronic")]


def test_diff_is_idempotent_once_applied() -> None:
    findings = [Finding(key("forecast"), {}), Finding(key("final"), {})]
    raised, resolved = diff_findings(set(), findings)
    assert raised == findings
    assert resolved == []
    again_raised, again_resolved = diff_findings({f.key for f in raised}, findings)
    assert again_raised == []
    assert again_resolved == []


def test_diff_accepts_a_mapping_and_dedupes_repeated_keys() -> None:
    first = Finding(key("forecast"), {"forecast": 0.5})
    dup = Finding(key("forecast"), {"forecast": 0.4})
    raised, resolved = diff_findings({key("final"): "detection-id"}, [first, dup])
    assert raised == [first]
    assert resolved == [key("final")]


def test_diff_resolved_order_is_deterministic() -> None:
    active = {key(reason, f"obj-{n}") for n in range(20) for reason in ("final", "forecast")}
    _, resolved = diff_findings(active, [])
    assert resolved == sorted(active)
    assert resolved[0] == key("final", "obj-0")
    assert resolved[1] == key("final", "obj-1")


def test_findings_hash_by_key() -> None:
    a = Finding(key("forecast"), {"x": 1.0})
    assert hash(a) == hash(Finding(key("forecast"), {"x": 1.0}))
    assert a != Finding(key("forecast"), {"x": 2.0})

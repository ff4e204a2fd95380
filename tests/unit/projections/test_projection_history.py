from projections.history import score_changed
from projections.scoring import ObjectiveScore


def view(score: float, progress: float, expected: float = 0.5) -> ObjectiveScore:
    return ObjectiveScore(
        score=score,
        progress=progress,
        expected=expected,
        health=score / expected,
        status="on_track",
        forecast=None,
        zone="commit",
        policy_version="v1",
    )


def test_first_row_is_always_due() -> None:
    assert score_changed(None, view(0.0, 0.0), {}, {})


def test_unchanged_numbers_need_no_row_even_as_time_passes() -> None:
    # expected/health move with time alone; that is not a history row.
    assert not score_changed(view(0.5, 0.6, 0.4), view(0.5, 0.6, 0.5), {"a": 0.5}, {"a": 0.5})


def test_score_or_progress_change_is_due() -> None:
    assert score_changed(view(0.5, 0.6), view(0.51, 0.6), {"a": 0.5}, {"a": 0.5})
    # Progress beyond the cap moves while the score stays at 1.
    assert score_changed(view(1.0, 1.2), view(1.0, 1.3), {"a": 1.0}, {"a": 1.0})


def test_key_result_change_is_due() -> None:
    # Two KRs swap scores: objective unchanged, history row still due.
    assert score_changed(view(0.5, 0.5), view(0.5, 0.5), {"a": 0.2, "b": 0.8}, {"a": 0.8, "b": 0.2})
    # A KR added or removed at score 0 changes nothing else but is due.
    assert score_changed(view(0.5, 0.5), view(0.5, 0.5), {"a": 0.5}, {"a": 0.5, "b": 0.0})
    assert score_changed(view(0.5, 0.5), view(0.5, 0.5), {"a": 0.5, "b": 0.0}, {"a": 0.5})

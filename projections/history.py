"""When an objective's score history gains a row."""

from __future__ import annotations

from collections.abc import Mapping

from projections.scoring import ObjectiveScore


def score_changed(
    previous: ObjectiveScore | None,
    new: ObjectiveScore,
    prev_kr_scores: Mapping[str, float],
    new_kr_scores: Mapping[str, float],
) -> bool:
    """Whether a history row is due: no previous row, or score, progress or any KR score
    (by KR id; a KR added or removed counts) differs. Exact comparison of the ratios.
    """
    if previous is None:
        return True
    if previous.score != new.score or previous.progress != new.progress:
        return True
    return dict(prev_kr_scores) != dict(new_kr_scores)

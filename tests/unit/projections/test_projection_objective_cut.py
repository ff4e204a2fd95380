"""A time-travel cut of an objective's stream folds every event it keeps.

History imports backdate occurred_at, so a cut at valid time T (occurred_at <= T) can keep
a later stream version and leave out an earlier one. `fold` takes such a gap for lost
records and stops applying; `fold_cut` must count every event of the cut."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

import events
from projections.objective import (
    ObjectiveState,
    fold,
    fold_cut,
    handled_types,
    key_result_input,
)
from tests.support.samples import T0, sample

LATER_TYPES = sorted(handled_types() - {"objective.drafted"})
KR_ID = str(UUID(int=1))  # the key result every sample KR event names


def _stream(drafted_at: int, later: list[tuple[str, int]]) -> list[events.Event]:
    """An objective stream: drafted `drafted_at` seconds after T0, then `later` as (type,
    seconds after T0) in stream order; occurred_at need not grow with the version."""
    sid = uuid4()
    stream = [sample("objective.drafted", stream_id=sid, version=1,
                     occurred_at=T0 + timedelta(seconds=drafted_at))]  # fmt: skip
    for version, (kind, offset) in enumerate(later, start=2):
        extra = {"value": float(version)} if kind == "key_result.checked_in" else {}
        at = T0 + timedelta(seconds=offset)
        stream.append(sample(kind, stream_id=sid, version=version, occurred_at=at, **extra))
    return stream


def _as_a_whole_stream(cut: list[events.Event]) -> ObjectiveState | None:
    """`fold` of the cut's events renumbered 1..n (a stream that never had the others),
    with the stream versions mapped back to the originals."""
    original = [e.stream_version for e in cut]
    state = fold(e.model_copy(update={"stream_version": i}) for i, e in enumerate(cut, 1))
    if state is None:
        return None
    return replace(
        state,
        version=original[state.version - 1],
        checkins=tuple(replace(c, version=original[c.version - 1]) for c in state.checkins),
    )


OFFSET = st.integers(min_value=0, max_value=10**6)


@settings(max_examples=200, deadline=None)
@given(
    drafted_at=OFFSET,
    later=st.lists(st.tuples(st.sampled_from(LATER_TYPES), OFFSET), max_size=20),
    cut_at=OFFSET,
)
def test_a_cut_folds_as_if_its_events_were_the_whole_stream(
    drafted_at: int, later: list[tuple[str, int]], cut_at: int
) -> None:
    stream = _stream(drafted_at, later)
    cut = [e for e in stream if e.occurred_at <= T0 + timedelta(seconds=cut_at)]
    state = fold_cut(cut)
    if drafted_at > cut_at:  # not drafted yet: the objective did not exist then
        assert state is None
        return
    assert state is not None
    assert state == _as_a_whole_stream(cut)
    assert state.version == max(e.stream_version for e in cut)


@settings(max_examples=100, deadline=None)
@given(later=st.lists(st.tuples(st.sampled_from(LATER_TYPES), OFFSET), max_size=20))
def test_the_cut_of_the_whole_stream_is_the_live_state(later: list[tuple[str, int]]) -> None:
    stream = _stream(0, later)
    assert fold_cut(stream) == fold(stream)


@settings(max_examples=200, deadline=None)
@given(checkins=st.lists(OFFSET, min_size=1, max_size=15), cut_at=OFFSET)
def test_every_check_in_that_occurred_by_the_cut_counts(checkins: list[int], cut_at: int) -> None:
    stream = _stream(
        0, [("key_result.added", 0)] + [("key_result.checked_in", o) for o in checkins]
    )
    cut = [e for e in stream if e.occurred_at <= T0 + timedelta(seconds=cut_at)]
    state = fold_cut(cut)
    assert state is not None
    kept = [e for e in cut if isinstance(e, events.KeyResultCheckedIn)]
    assert {c.event_id for c in state.checkins} == {str(e.event_id) for e in kept}
    kr = state.key_result(KR_ID)
    assert kr is not None
    current = key_result_input(state, kr, None, T0 + timedelta(seconds=cut_at)).current
    latest = max(kept, key=lambda e: (e.occurred_at, e.stream_version), default=None)
    assert current == (None if latest is None else latest.value)


def test_a_backdated_import_counts_at_a_cut_between_it_and_the_check_in_before_it() -> None:
    """A check-in on Mar 1st (v3), then one imported as of Feb 1st (v4): as of Feb 15th the
    imported one counts, although v3 is outside the cut (`fold` stops at the gap)."""
    stream = _stream(0, [("key_result.added", 0),
                         ("key_result.checked_in", 3600 * 24 * 45),
                         ("key_result.checked_in", 3600 * 24 * 17)])  # fmt: skip
    cut_at = T0 + timedelta(days=31)
    cut = [e for e in stream if e.occurred_at <= cut_at]
    assert [e.stream_version for e in cut] == [1, 2, 4]
    stuck = fold(cut)
    assert stuck is not None
    assert stuck.version == 2
    state = fold_cut(cut)
    assert state is not None
    assert state.version == 4
    kr = state.key_result(KR_ID)
    assert kr is not None
    assert key_result_input(state, kr, None, cut_at).current == 4.0  # the v4 check-in's value

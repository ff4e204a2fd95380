"""An objective's and its key results' updated_at: the latest valid time of a change.

A check-in entered late (occurred_at in the past) is a change, but not a later one: the
key result's and the objective's updated_at never move back."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from projections.objective import ObjectiveState, apply
from tests.support.samples import T0, sample

KR = UUID(int=1)


def _kr_updated(state: ObjectiveState) -> object:
    return next(kr.updated_at for kr in state.key_results if kr.id == str(KR))


def test_a_backdated_check_in_keeps_the_later_updated_at() -> None:
    sid = uuid4()
    state = apply(None, sample("objective.drafted", stream_id=sid, version=1))
    state = apply(state, sample("key_result.added", stream_id=sid, version=2, kpi_id=None))
    late = T0 + timedelta(days=3)
    state = apply(
        state, sample("key_result.checked_in", stream_id=sid, version=3, occurred_at=late)
    )
    assert state is not None
    assert (_kr_updated(state), state.updated_at) == (late, late)
    backdated = sample(
        "key_result.checked_in", stream_id=sid, version=4, occurred_at=T0 + timedelta(days=1)
    )
    after = apply(state, backdated)
    assert after is not None
    assert after.version == 4  # applied: it is the latest check-in by version, not by time
    assert len(after.checkins) == 2
    assert (_kr_updated(after), after.updated_at) == (late, late)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12))
def test_updated_at_is_the_latest_occurred_at_of_the_changes(minutes: list[int]) -> None:
    sid = uuid4()
    state = apply(None, sample("objective.drafted", stream_id=sid, version=1))
    state = apply(state, sample("key_result.added", stream_id=sid, version=2, kpi_id=None))
    for i, m in enumerate(minutes):
        at = T0 + timedelta(minutes=m)
        state = apply(
            state, sample("key_result.checked_in", stream_id=sid, version=3 + i, occurred_at=at)
        )
    assert state is not None
    latest = T0 + timedelta(minutes=max(minutes))
    assert _kr_updated(state) == latest
    assert state.updated_at == latest

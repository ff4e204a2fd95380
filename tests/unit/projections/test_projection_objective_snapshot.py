"""An objective state's snapshot (its JSON form) reads back as the very same state."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.objective import ObjectiveState, apply, from_snapshot, handled_types
from tests.support.samples import T0, sample

LATER_TYPES = sorted(handled_types() - {"objective.drafted"})


def _round_trip(state: ObjectiveState) -> ObjectiveState:
    return from_snapshot(orjson.loads(orjson.dumps(state)))


@settings(max_examples=150, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(LATER_TYPES), max_size=25),
    offsets=st.lists(st.integers(min_value=0, max_value=10**7), min_size=25, max_size=25),
    micros=st.integers(min_value=0, max_value=999_999),
)
def test_every_folded_state_survives_its_snapshot(
    kinds: list[str], offsets: list[int], micros: int
) -> None:
    sid = uuid4()
    state = apply(None, sample("objective.drafted", stream_id=sid, version=1))
    assert _round_trip(state) == state
    version = 1
    for kind, offset in zip(kinds, offsets, strict=False):
        at = T0 + timedelta(seconds=offset, microseconds=micros)
        event = sample(kind, stream_id=sid, version=version + 1, occurred_at=at, recorded_at=at)
        try:
            new = apply(state, event)
        except ValueError:  # e.g. a check-in for a key result not added yet
            continue
        version += 1
        state = new
        back = _round_trip(state)
        assert back == state
        assert type(back.period.start) is type(state.period.start)
        assert all(t.since.tzinfo is not None for kr in back.key_results for t in kr.targets)


def test_a_snapshot_of_another_shape_is_refused() -> None:
    state = apply(None, sample("objective.drafted", stream_id=UUID(int=9), version=1))
    data = orjson.loads(orjson.dumps(state))
    data["unknown_field"] = 1
    try:
        from_snapshot(data)
    except TypeError:
        return
    raise AssertionError("a snapshot with an unknown field must not read as a state")

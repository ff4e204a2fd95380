"""An objective's fold never applies an event beyond the next stream version.

After the embedded broker loses its topics, the relay republishes everything from the start;
new events may reach the processor before the old ones come again. Applying them out of
order would make the older ones look already applied (and lose them)."""

from __future__ import annotations

from uuid import uuid4

import events
from projections.objective import apply
from tests.support.samples import sample


def test_a_gap_is_not_applied_and_the_stream_then_folds_in_order() -> None:
    sid = uuid4()
    drafted = sample("objective.drafted", stream_id=sid, version=1)
    revised = sample("objective.revised", stream_id=sid, version=2, title="Second")
    closed = sample("objective.closed", stream_id=sid, version=3)
    state = apply(None, drafted)
    assert apply(state, closed) is state  # version 3 before 2: not applied
    state = apply(state, revised)
    assert state.version == 2
    assert state.title == "Second"
    state = apply(state, closed)
    assert state.version == 3
    assert state.state == "closed"
    assert apply(state, revised) is state  # redelivery: unchanged
    assert isinstance(closed, events.ObjectiveClosed)

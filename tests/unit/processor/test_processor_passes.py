"""When the deferred notices are re-evaluated: once the kpi agent is idle, or a hold after
the first notice deferred since the last pass began."""

from __future__ import annotations

import time

from services.processor.app import KPI_IDLE_S, PASS_HOLD_S, Activity, Passes


def test_activity_is_busy_while_a_batch_runs_and_shortly_after() -> None:
    activity = Activity()
    assert activity.idle(KPI_IDLE_S), "an agent that never worked is idle"
    with activity.batch():
        assert not activity.idle(0.0)
    assert not activity.idle(60.0), "a batch just ended: more may follow"
    assert activity.idle(0.0)


def test_a_worker_starts_due_notices_an_earlier_run_deferred_may_wait() -> None:
    passes = Passes()
    assert passes.due(Activity())
    passes.start()
    assert not passes.due(Activity()), "nothing deferred since the pass began"


def test_a_pass_waits_while_the_kpi_agent_works_until_the_hold_ends() -> None:
    passes, kpi = Passes(), Activity()
    passes.start()
    with kpi.batch():
        passes.deferred()
        assert not passes.due(kpi), "the kpi agent works: more notices for the same objectives"
        first = passes.deferred_at
        passes.deferred()
        assert passes.deferred_at == first, "the hold runs from the first notice deferred"
        assert first is not None
        passes.deferred_at = first - PASS_HOLD_S
        assert passes.due(kpi), "the hold is over: a pass, even while the kpi agent works"
    passes.start()
    passes.deferred()
    kpi.ended_at = time.monotonic() - KPI_IDLE_S
    assert passes.due(kpi), "the kpi agent is idle: no reason to wait"


def test_after_a_failed_pass_the_next_waits_a_hold_even_with_the_kpi_agent_idle() -> None:
    passes, idle = Passes(), Activity()
    passes.start()
    passes.failed()
    assert not passes.due(idle), "no retry at once: a poison objective would spin"
    passes.retry_at = time.monotonic() - 1
    assert passes.due(idle), "the failed pass's notices are still deferred"

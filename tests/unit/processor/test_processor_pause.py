"""The objective agent's pause after a pass gives way to the kpi agent only while it works."""

from __future__ import annotations

import asyncio
import time

from services.processor.app import KPI_IDLE_S, PASS_PAUSE_MAX_S, Activity, give_way


def test_activity_is_busy_while_a_batch_runs_and_shortly_after() -> None:
    activity = Activity()
    assert activity.idle(KPI_IDLE_S), "an agent that never worked is idle"
    with activity.batch():
        assert not activity.idle(0.0)
    assert not activity.idle(60.0), "a batch just ended: more may follow"
    assert activity.idle(0.0)


def test_the_pause_ends_at_once_when_the_kpi_agent_is_idle() -> None:
    started = time.monotonic()
    asyncio.run(give_way(PASS_PAUSE_MAX_S, Activity()))
    assert time.monotonic() - started < PASS_PAUSE_MAX_S / 2


def test_the_pause_lasts_while_the_kpi_agent_works_and_ends_when_it_stops() -> None:
    activity = Activity()

    async def scenario() -> tuple[float, float]:
        started = time.monotonic()
        with activity.batch():  # a kpi batch running through the whole pause
            await give_way(0.3, activity)
        full = time.monotonic() - started
        started = time.monotonic()
        with activity.batch():
            pause = asyncio.ensure_future(give_way(PASS_PAUSE_MAX_S, activity))
            await asyncio.sleep(0.1)
        await pause  # the batch ended 0.1 s in: the pause ends KPI_IDLE_S after that
        return full, time.monotonic() - started

    full, cut = asyncio.run(scenario())
    assert full >= 0.3, "the pause lasts as long as the pass while the kpi agent works"
    assert 0.1 + KPI_IDLE_S <= cut < PASS_PAUSE_MAX_S

"""The objective agent's pause after a pass, and its hold before a pass of notices only,
give way to the kpi agent only while it works."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from contracts.topics import (
    CONTENT_WATERMARK,
    GOAL_EVENTS,
    HEADER_CONTENT,
    HEADER_WATERMARK,
    KR_MEASUREMENTS,
)
from services.processor.app import (
    KPI_IDLE_S,
    PASS_PAUSE_MAX_S,
    Activity,
    give_way,
    measurements_only,
)
from services.processor.records import encode_measure_watermark


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


def _record(topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> object:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, value=value, headers=headers or []))


def test_only_a_take_of_measurements_and_watermarks_is_held() -> None:
    measured = _record(KR_MEASUREMENTS.name, encode_measure_watermark(7, 0))
    mark = _record(
        GOAL_EVENTS.name,
        b'{"watermark": 7}',
        [(HEADER_CONTENT, CONTENT_WATERMARK.encode()), (HEADER_WATERMARK, b"7")],
    )
    goal_event = _record(GOAL_EVENTS.name, b'{"type": "objective.drafted"}')
    assert measurements_only([measured, mark, measured])
    assert not measurements_only([measured, goal_event]), "a goal event never waits"
    assert not measurements_only([mark]), "nothing to re-evaluate: nothing to hold"
    assert not measurements_only([])

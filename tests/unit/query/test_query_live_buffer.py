"""A slow SSE client's buffer is bounded and coalesces newest-state changes (never distinct
detections); it never blocks the feed; a server told to stop ends the streams."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from services.query.live import Feed, Subscriber, format_event
from services.query.store import ReadStore


def test_coalesces_per_subject_and_keeps_order() -> None:
    async def run() -> None:
        sub = Subscriber("acme", max_pending=10)
        sub.offer(1, "objective.updated", "o1", '{"v":1}')
        sub.offer(2, "kpi.updated", "k1", '{"v":2}')
        sub.offer(3, "objective.updated", "o1", '{"v":3}')
        assert sub.wake.is_set()
        assert sub.drain() == [(2, "kpi.updated", '{"v":2}'), (3, "objective.updated", '{"v":3}')]
        assert not sub.wake.is_set()

    asyncio.run(run())


def test_distinct_detections_of_one_subject_are_all_kept() -> None:
    """A detection change's subject is the objective (KPI, owner) it is about: two of its
    detections raised, or resolved, together are two events, not a newer state of one."""

    async def run() -> None:
        sub = Subscriber("acme", max_pending=10)
        sub.offer(4, "detection.raised", "o1", '{"detection_id":"forecast"}')
        sub.offer(5, "detection.raised", "o1", '{"detection_id":"final"}')
        sub.offer(6, "objective.updated", "o1", '{"v":6}')
        sub.offer(7, "detection.resolved", "o1", '{"detection_id":"forecast"}')
        sub.offer(8, "detection.resolved", "o1", '{"detection_id":"final"}')
        sub.offer(9, "objective.updated", "o1", '{"v":9}')
        assert sub.drain() == [
            (4, "detection.raised", '{"detection_id":"forecast"}'),
            (5, "detection.raised", '{"detection_id":"final"}'),
            (7, "detection.resolved", '{"detection_id":"forecast"}'),
            (8, "detection.resolved", '{"detection_id":"final"}'),
            (9, "objective.updated", '{"v":9}'),
        ]

    asyncio.run(run())


def test_bounded_drops_oldest() -> None:
    async def run() -> None:
        sub = Subscriber("acme", max_pending=3)
        for i in range(10):
            sub.offer(i, "kpi.updated", f"k{i}", "{}")
        items = sub.drain()
        assert [seq for seq, _, _ in items] == [7, 8, 9]
        assert sub.dropped == 7

    asyncio.run(run())


def test_format_event_splits_lines() -> None:
    assert (
        format_event(5, "kpi.updated", "a\nb") == "id: 5\nevent: kpi.updated\ndata: a\ndata: b\n\n"
    )


class _EmptyStore:
    def read(self, fn: Callable[..., Any]) -> list[tuple[Any, ...]]:
        return []


def test_a_stop_signal_ends_the_streams_and_still_reaches_the_servers_handler() -> None:
    received: list[int] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:  # uvicorn's, say
        received.append(signum)

    saved = {s: signal.signal(s, server_handler) for s in (signal.SIGINT, signal.SIGTERM)}

    async def run() -> None:
        feed = Feed(cast(ReadStore, _EmptyStore()), poll_s=0.01)
        first, second = feed.subscribe("acme"), feed.subscribe("other")
        assert not first.closed
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.05)
        assert received == [signal.SIGTERM]
        assert first.closed
        assert second.closed
        assert first.wake.is_set()
        late = feed.subscribe("acme")  # a request that was already in flight
        assert late.closed
        for sub in (first, second, late):
            feed.unsubscribe(sub)
        await asyncio.sleep(0.05)  # the poller ends with its last subscriber

    try:
        asyncio.run(run())
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)

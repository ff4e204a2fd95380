"""A slow SSE client's buffer is bounded and coalesces; it never blocks the feed."""

from __future__ import annotations

import asyncio

from services.query.live import Subscriber, format_event


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

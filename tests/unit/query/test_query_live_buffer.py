"""A slow SSE client's buffer is bounded and coalesces newest-state changes (never distinct
detections); it never blocks the feed; a server told to stop ends the streams."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import pytest

from services.http.problems import Problem
from services.query.live import (
    RESET_EVENT,
    Feed,
    Subscriber,
    format_event,
    last_event_id_of,
    reset_payload,
)
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


def test_a_reset_comes_after_what_was_pending_and_before_the_new_numbering() -> None:
    """A swapped-in generation numbers its changes anew: a lower seq offered after the
    reset still comes after it, and what was pending before comes first."""

    async def run() -> None:
        sub = Subscriber("acme", max_pending=2)
        sub.offer(40, "kpi.updated", "k1", "old")
        sub.reset(5, reset_payload("swapped", None, 5))
        sub.offer(6, "kpi.updated", "k2", "new")
        sub.offer(7, "detection.raised", "o1", "new")
        sub.offer(8, "detection.raised", "o2", "new")  # full: drops the oldest change...
        items = sub.drain()
        assert [(seq, kind) for seq, kind, _ in items] == [
            (5, RESET_EVENT),  # ...never the notice
            (7, "detection.raised"),
            (8, "detection.raised"),
        ]
        assert items[0][2] == '{"reason": "swapped", "last_event_id": null, "continues_after": 5}'
        assert sub.drain() == []

    asyncio.run(run())


def test_a_resumed_subscriber_ignores_what_its_catch_up_delivered_until_a_reset() -> None:
    async def run() -> None:
        sub = Subscriber("acme")
        sub.floor = 10
        sub.offer(9, "detection.raised", "o1", "{}")
        sub.offer(10, "detection.raised", "o2", "{}")
        sub.offer(11, "detection.raised", "o3", "{}")
        assert [seq for seq, _, _ in sub.drain()] == [11]
        sub.reset(3, "{}")  # another generation: its seqs are not the catch-up's
        sub.offer(4, "detection.raised", "o4", "{}")
        assert [seq for seq, _, _ in sub.drain()] == [3, 4]

    asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("12", None, 12),
        ("0", "5", 0),  # the header wins
        ("  7 ", None, 7),
        ("", "5", 5),  # an empty header counts as none
        (None, "5", 5),
        (None, None, None),
        (None, "", None),
        ("9" * 20, None, 10**20 - 1),
    ],
)
def test_last_event_id_of(header: str | None, query: str | None, expected: int | None) -> None:
    assert last_event_id_of(header, query) == expected


@pytest.mark.parametrize("bad", ["-1", "+1", "1e3", "x", "1_000", "\u0661", "9" * 21, "9" * 5000])
def test_a_malformed_last_event_id_is_a_422_problem(bad: str) -> None:
    with pytest.raises(Problem) as raised:
        last_event_id_of(bad, "3")
    assert raised.value.status == 422
    assert raised.value.errors is not None
    assert [e["loc"] for e in raised.value.errors] == [["header", "last-event-id"]]


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

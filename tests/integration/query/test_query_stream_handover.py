"""The hand-over of a resumed stream from its catch-up to the live feed, driven step by step
over a real projection store: the catch-up is paused between its last read and its join
while changes are written, so each race is taken on purpose, not by chance."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from services.query.live import Feed, Resume, Subscriber, resume_point
from services.query.store import ReadStore
from tests.integration.query.conftest import World
from tests.integration.query.test_query_stream_resume import _change

pytestmark = pytest.mark.integration


def _run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on a loop of its own thread: the feed chains onto signal handlers only in the
    main thread, and a test must not leave any behind."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(coro())
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if failure:
        raise failure[0]


async def _until(condition: Callable[[], bool], what: object) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


def _ids(texts: list[str]) -> list[int]:
    return [int(t.split("\n", 1)[0].removeprefix("id: ")) for t in texts]


async def _until_paused_at(events: AsyncIterator[str], last: int) -> list[str]:
    """The catch-up's events up to the one with id `last`: the generator is then paused
    between its final read and its join."""
    got: list[str] = []
    while not got or _ids(got)[-1] != last:
        got.append(await events.__anext__())
    return got


def _resume(world: World, feed: Feed, after: int) -> Resume:
    start = feed.store.read(lambda cur, t: resume_point(cur, t, after))
    assert start.reason is None
    return Resume(feed, "acme", after, start, page_size=100)


async def _drain(sub: Subscriber, last: int) -> list[int]:
    got: list[int] = []
    while last not in got:
        await asyncio.wait_for(sub.wake.wait(), 10)
        got += [seq for seq, _, _ in sub.drain()]
    return got


def test_a_poller_ahead_of_the_catch_up_makes_it_read_on_before_joining(world: World) -> None:
    """The poller has offered changes the catch-up has not read: joining then would lose
    them."""

    async def run() -> None:
        feed = Feed(ReadStore(world.db, world.settings.kafka_partitions), poll_s=0.01)
        other = feed.subscribe("globex")  # keeps the poller running
        await _until(lambda: feed._cursor is not None, "the poller took its starting point")
        seqs = [_change(world, "acme") for _ in range(4)]
        resume = _resume(world, feed, seqs[0])
        events = resume.events()
        caught = await _until_paused_at(events, seqs[-1])
        ahead = [_change(world, "acme") for _ in range(3)]
        await _until(lambda: feed._cursor is not None and feed._cursor[1] >= ahead[-1], "poll")
        caught += [text async for text in events]
        sub = resume.sub
        assert sub is not None
        later = _change(world, "acme")
        live = await _drain(sub, later)
        feed.unsubscribe(sub)
        feed.unsubscribe(other)
        assert _ids(caught) + live == [*seqs[1:], *ahead, later]

    _run(run)


def test_a_catch_up_that_finds_no_poller_starts_it_where_it_stopped_reading(
    world: World,
) -> None:
    """Nobody listens: the poller would start at the head, past what was written between
    the catch-up's last read and its join."""

    async def run() -> None:
        feed = Feed(ReadStore(world.db, world.settings.kafka_partitions), poll_s=0.01)
        seqs = [_change(world, "acme") for _ in range(4)]
        resume = _resume(world, feed, seqs[1])
        events = resume.events()
        caught = await _until_paused_at(events, seqs[-1])
        assert not feed.polling
        meanwhile = [_change(world, "acme") for _ in range(2)]
        caught += [text async for text in events]
        sub = resume.sub
        assert sub is not None
        live = await _drain(sub, meanwhile[-1])
        feed.unsubscribe(sub)
        assert _ids(caught) + live == [*seqs[2:], *meanwhile]

    _run(run)


def test_a_joined_stream_skips_what_its_catch_up_delivered(world: World) -> None:
    """The poller is behind the catch-up when it joins: the changes up to where the
    catch-up read are not delivered again."""

    async def run() -> None:
        feed = Feed(ReadStore(world.db, world.settings.kafka_partitions), poll_s=0.01)
        other = feed.subscribe("globex")
        await _until(lambda: feed._cursor is not None, "the poller took its starting point")
        behind = feed._read_from if feed._reading else feed._cursor
        assert behind is not None
        seqs = [_change(world, "acme") for _ in range(3)]
        # No await since the writes: the poller has not moved, it is behind seqs[1].
        sub = feed.join("acme", behind[0], seqs[1])
        assert sub is not None
        live = await _drain(sub, seqs[2])
        feed.unsubscribe(sub)
        feed.unsubscribe(other)
        assert live == [seqs[2]]

    _run(run)

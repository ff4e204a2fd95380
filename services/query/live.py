"""GET /v1/stream: Server-Sent Events from the projection store's change feed.

One poller per process reads the `changes` table (seq > last) and fans each change out to
the subscribers of its organisation. Each subscriber has a bounded, coalescing buffer: a
newer objective.updated / kpi.updated of the same subject replaces the pending one (they
announce a subject's newest state), while every detection.raised / detection.resolved is
kept (one subject may have several detections, each its own event); when the buffer is
full the oldest pending change is dropped, so a slow client never blocks the poller or the
other clients. Heartbeat comment lines keep proxies from closing idle connections. The
poller runs while someone listens; a subscriber that finds it stopped starts at the head.

EventSource cannot set headers: the token may be given as `?access_token=` on this route
only (over TLS in production; it appears in access logs otherwise).

A stream never ends by itself, and uvicorn's graceful shutdown waits for every response to
end: so the feed chains onto the server's SIGINT/SIGTERM handlers and ends its streams when
the server is told to stop (the clients reconnect, after `retry`, to whichever server runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from services.auth.tokens import Principal, TokenStore
from services.http.problems import Problem
from services.http.security import CHALLENGE
from services.projectionstore.db import Cursor
from services.projectionstore.meta import swap_mark_key
from services.projectionstore.schema import META_TABLE, Tables
from services.query.store import ReadStore

log = logging.getLogger("okrstream.query.live")

HEARTBEAT_S = 15.0
POLL_S = 0.1
MAX_PENDING = 1000
KINDS = ("objective.updated", "kpi.updated", "detection.raised", "detection.resolved")
# The kinds that announce a subject's newest state: only the latest pending one matters.
NEWEST_STATE_KINDS = frozenset({"objective.updated", "kpi.updated"})
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Subscriber:
    """One SSE client: its organisation and its bounded, coalescing buffer."""

    def __init__(self, org: str, max_pending: int = MAX_PENDING) -> None:
        self.org = org
        self.max_pending = max_pending
        # Keyed by (kind, subject) for the newest-state kinds, else by the change's seq.
        self.pending: OrderedDict[tuple[str, str] | int, tuple[int, str, str]] = OrderedDict()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.closed = False  # the server is stopping: end the stream once drained

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def offer(self, seq: int, kind: str, subject_id: str, payload: str) -> None:
        # A detection change's subject is the objective / KPI / owner, shared by all its
        # detections: merging those would lose distinct events, so they are never merged.
        key: tuple[str, str] | int = (kind, subject_id) if kind in NEWEST_STATE_KINDS else seq
        if key in self.pending:
            del self.pending[key]  # coalesce: only the newest state of a subject matters
        elif len(self.pending) >= self.max_pending:
            self.pending.popitem(last=False)
            self.dropped += 1
        self.pending[key] = (seq, kind, payload)
        self.wake.set()

    def drain(self) -> list[tuple[int, str, str]]:
        items = sorted(self.pending.values())
        self.pending.clear()
        self.wake.clear()
        return items


class Feed:
    """The process's single poller of the change feed and its subscribers."""

    def __init__(self, store: ReadStore, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._cursor: tuple[int, int] | None = None  # (generation, last seq)
        self.closing = False  # the server is stopping

    def subscribe(self, org: str) -> Subscriber:
        """A new subscriber of `org`'s changes (call on the server's event loop)."""
        loop = asyncio.get_running_loop()
        if _ServerStopWatch.install(self, loop):
            self.closing = False  # a server (re)started serving this app
        sub = Subscriber(org)
        if self.closing:
            sub.close()
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return sub

    def close_streams(self) -> None:
        """End every stream (after what is pending): the server is shutting down."""
        self.closing = True
        for sub in list(self.subscribers):
            sub.close()

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    @property
    def polling(self) -> bool:
        """Whether the poller runs (it stops once the last subscriber has left)."""
        return self._task is not None and not self._task.done()

    def _read(self) -> list[tuple[Any, ...]]:
        return self.store.read(self._changes)

    def _changes(self, cur: Cursor, t: Tables) -> list[tuple[Any, ...]]:
        """The changes after the cursor, in the generation live in this read transaction."""
        if self._cursor is None or self._cursor[0] != t.generation:
            # Start at the head: subscribers get what happens from now on. After a replay's
            # swap, at its mark: what the swap told (detections it reconciled) happened now.
            mark = None
            if self._cursor is not None:
                mark = ReadStore.one(
                    cur,
                    f"SELECT value FROM {META_TABLE} WHERE key = ?",
                    (swap_mark_key(t),),
                    t.generation,
                )
            if mark is not None:
                self._cursor = (t.generation, int(mark[0]))
            else:
                row = ReadStore.one(cur, f"SELECT MAX(seq) FROM {t.changes}", (), t.generation)
                self._cursor = (t.generation, int(row[0] or 0) if row else 0)
                return []
        return ReadStore.rows(
            cur,
            f"SELECT seq, org_id, kind, subject_id, payload FROM {t.changes}"
            " WHERE seq > ? ORDER BY seq LIMIT 5000",
            (self._cursor[1],),
            t.generation,
        )

    async def poll_once(self) -> int:
        rows = await asyncio.to_thread(self._read)
        for seq, org, kind, subject_id, payload in rows:
            for sub in list(self.subscribers):
                if sub.org == org:
                    sub.offer(int(seq), str(kind), str(subject_id), str(payload))
        if rows and self._cursor is not None:
            self._cursor = (self._cursor[0], int(rows[-1][0]))
        return len(rows)

    async def _run(self) -> None:
        try:
            while self.subscribers:
                try:
                    if await self.poll_once() == 0:
                        await asyncio.sleep(self.poll_s)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a store hiccup must not end the feed
                    log.exception("change feed poll failed")
                    await asyncio.sleep(1.0)
        finally:
            # Nobody listened from here on: the next subscriber starts at the head, not with
            # the backlog of what happened meanwhile.
            self._cursor = None


class _ServerStopWatch:
    """A SIGINT/SIGTERM handler that tells a feed the server is stopping, then calls the
    server's own handler (uvicorn's sets should_exit). uvicorn restores the handlers it
    replaced when it has stopped, which removes this one with its own."""

    def __init__(self, feed: Feed, loop: asyncio.AbstractEventLoop, previous: Any) -> None:
        self.feed, self.loop, self.previous = feed, loop, previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            self.loop.call_soon_threadsafe(self.feed.close_streams)
        self.previous(signum, frame)

    @classmethod
    def install(cls, feed: Feed, loop: asyncio.AbstractEventLoop) -> bool:
        """Chain onto the current handlers unless done already; whether it was done now.
        Only a process's main thread receives signals: a server run in another thread is
        stopped by its owner, and there is no handler to chain onto without a server."""
        if threading.current_thread() is not threading.main_thread():
            return False
        installed = False
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue
            if isinstance(previous, cls) and previous.feed is feed:
                continue
            signal.signal(signum, cls(feed, loop, previous))
            installed = True
        return installed


def feed_of(app: FastAPI) -> Feed:
    feed: Feed | None = getattr(app.state, "query_feed", None)
    if feed is None:
        feed = Feed(app.state.query_store)
        app.state.query_feed = feed
    return feed


def stream_principal(request: Request, access_token: str | None) -> Principal:
    """Bearer header, or `?access_token=` (EventSource cannot send headers)."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else access_token
    if not token:
        raise Problem(401, "a bearer token or access_token is required", headers=CHALLENGE)
    tokens: TokenStore = request.app.state.tokens
    principal = tokens.verify(token)
    if principal is None:
        raise Problem(401, "unknown token", headers=CHALLENGE)
    if not principal.allows("read"):
        raise Problem(403, "this token lacks the 'read' scope")
    return principal


def format_event(seq: int, kind: str, payload: str) -> str:
    data = "".join(f"data: {line}\n" for line in payload.splitlines() or [""])
    return f"id: {seq}\nevent: {kind}\n{data}\n"


def build_router() -> APIRouter:
    router = APIRouter(tags=["live"])

    @router.get(
        "/v1/stream",
        summary="Server-Sent Events: objective.updated, kpi.updated, detection.raised/resolved",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        request: Request,
        access_token: Annotated[
            str | None, Query(max_length=300, description="token, for EventSource clients")
        ] = None,
    ) -> StreamingResponse:
        principal = await asyncio.to_thread(stream_principal, request, access_token)
        feed = feed_of(request.app)
        heartbeat_s: float = getattr(request.app.state, "sse_heartbeat_s", HEARTBEAT_S)
        sub = feed.subscribe(principal.org_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                while not sub.closed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sub.wake.wait(), heartbeat_s)
                    items = sub.drain()
                    if not items and not sub.closed:
                        yield ": heartbeat\n\n"
                    for seq, kind, payload in items:
                        yield format_event(seq, kind, payload)
            finally:
                feed.unsubscribe(sub)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router

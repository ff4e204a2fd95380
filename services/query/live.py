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

Resuming. Every event's `id` is the seq of its change. A client that reconnects with
`Last-Event-ID: N` (what EventSource sends; or `?last_event_id=N`, the header wins; an empty
value counts as none) first gets its organisation's changes with seq > N, every one, in seq
order, read 1000 at a time (CATCH_UP_PAGE), then the live stream with no gap and no
duplicate: the catch-up joins the feed only when the poller's cursor is not past what it has
read, and the subscriber then ignores the changes up to there. An N that is not 1–20 ASCII
digits answers 422 (problem+json, `errors[0].loc` = ["header", "last-event-id"] or ["query",
"last_event_id"]).

When the client cannot be brought up to date exactly, the stream says so first with

    id: S
    event: stream.reset
    data: {"reason": R, "last_event_id": N, "continues_after": S}

and goes on with the changes after S (its `id` makes a later reconnect resume from S):
- R = "swapped": N is below the live generation's swap mark (swap_mark_key), so N was
  numbered by the generation a replay replaced (seqs start anew in every generation); S is
  the mark, and what follows is what the swap told (the detections it reconciled) and
  everything since. A stream that is connected when the poller finds a swap gets the same
  event (with "last_event_id": null) at that point.
- R = "beyond_head": N is above the newest seq (the tables were rebuilt, or the client
  talked to another store); S is the head.
- R = "truncated": changes after N are no longer kept (the oldest kept is above N + 1); S is
  the one before the oldest kept. (Nothing prunes the changes table today: this guards a
  future retention.)
A dashboard should reload its views on stream.reset. An N from a replaced generation that
happens to lie between the new generation's swap mark and its head cannot be told from one
of the new generation: it is resumed as if it were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse

from services.auth.tokens import Principal, TokenStore
from services.http.problems import Problem
from services.http.security import CHALLENGE
from services.projectionstore.db import Cursor
from services.projectionstore.meta import swap_mark_key
from services.projectionstore.schema import META_TABLE, Tables
from services.query.store import ReadStore, Row

log = logging.getLogger("okrstream.query.live")

HEARTBEAT_S = 15.0
POLL_S = 0.1
MAX_PENDING = 1000
CATCH_UP_PAGE = 1000  # changes read per query while a resumed stream catches up
LAST_EVENT_ID_DIGITS = 20  # enough for any seq (BIGINT); longer is refused, not parsed
KINDS = ("objective.updated", "kpi.updated", "detection.raised", "detection.resolved")
RESET_EVENT = "stream.reset"
# The kinds that announce a subject's newest state: only the latest pending one matters.
NEWEST_STATE_KINDS = frozenset({"objective.updated", "kpi.updated"})
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def reset_payload(reason: str, last_event_id: int | None, continues_after: int) -> str:
    """The data of a stream.reset event (see the module docstring)."""
    return json.dumps(
        {"reason": reason, "last_event_id": last_event_id, "continues_after": continues_after}
    )


class Subscriber:
    """One SSE client: its organisation and its bounded, coalescing buffer."""

    def __init__(self, org: str, max_pending: int = MAX_PENDING) -> None:
        self.org = org
        self.max_pending = max_pending
        # Keyed by (kind, subject) for the newest-state kinds, else by the change's seq.
        # Values are (epoch, seq, kind, payload): what was pending before a reset (a swap,
        # whose generation numbers its seqs anew) is delivered before it.
        self.pending: OrderedDict[tuple[str, str] | int, tuple[int, int, str, str]] = OrderedDict()
        # stream.reset notices: never dropped or merged, and not counted in max_pending.
        self.notices: list[tuple[int, int, str, str]] = []
        self.epoch = 0
        # A resumed stream's catch-up delivered the changes up to this seq (of the
        # generation live when it joined; a reset clears it).
        self.floor: int | None = None
        self.wake = asyncio.Event()
        self.dropped = 0
        self.closed = False  # the server is stopping: end the stream once drained

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def offer(self, seq: int, kind: str, subject_id: str, payload: str) -> None:
        if self.floor is not None and seq <= self.floor:
            return  # the catch-up delivered it
        # A detection change's subject is the objective / KPI / owner, shared by all its
        # detections: merging those would lose distinct events, so they are never merged.
        key: tuple[str, str] | int = (kind, subject_id) if kind in NEWEST_STATE_KINDS else seq
        if key in self.pending:
            del self.pending[key]  # coalesce: only the newest state of a subject matters
        elif len(self.pending) >= self.max_pending:
            self.pending.popitem(last=False)
            self.dropped += 1
        self.pending[key] = (self.epoch, seq, kind, payload)
        self.wake.set()

    def reset(self, continues_after: int, payload: str) -> None:
        """Announce a stream.reset: the changes offered from now on follow `continues_after`
        in another numbering (a swapped-in generation)."""
        self.epoch += 1
        self.floor = None
        self.notices.append((self.epoch, continues_after, RESET_EVENT, payload))
        self.wake.set()

    def drain(self) -> list[tuple[int, str, str]]:
        items = sorted([*self.pending.values(), *self.notices])
        self.pending.clear()
        self.notices.clear()
        self.wake.clear()
        return [(seq, kind, payload) for _, seq, kind, payload in items]


class Feed:
    """The process's single poller of the change feed and its subscribers."""

    def __init__(self, store: ReadStore, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._cursor: tuple[int, int] | None = None  # (generation, last seq)
        # While a poll's read runs in a thread (which may move the cursor: a start at the
        # head, a swap), the cursor it started from: what its rows follow.
        self._reading = False
        self._read_from: tuple[int, int] | None = None
        self.closing = False  # the server is stopping

    def attach(self) -> None:
        """Before serving a stream (on the server's event loop): follow the server's stop."""
        if _ServerStopWatch.install(self, asyncio.get_running_loop()):
            self.closing = False  # a server (re)started serving this app

    def subscribe(self, org: str) -> Subscriber:
        """A new subscriber of `org`'s changes (call on the server's event loop)."""
        self.attach()
        sub = Subscriber(org)
        if self.closing:
            sub.close()
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return sub

    def join(self, org: str, generation: int, covered: int) -> Subscriber | None:
        """A subscriber of `org` whose earlier changes, up to seq `covered` of `generation`,
        were delivered already (a resumed stream's catch-up): when the poller's next rows
        follow a seq not above `covered`, so nothing after it is missed; else None (read
        on, then try again). Synchronous on the event loop, so no poll completes meanwhile."""
        start = self._read_from if self._reading else self._cursor
        if start is None:
            if self._reading:
                return None  # the poller is taking its starting point: not known yet
            self._cursor = (generation, covered)  # nobody polls: the poller starts here
        elif start[0] != generation or start[1] > covered:
            return None
        sub = self.subscribe(org)
        sub.floor = covered
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
                mark = swap_mark(cur, t)
            if mark is not None:
                self._cursor = (t.generation, mark)
            else:
                self._cursor = (t.generation, head_seq(cur, t))
                return []
        return ReadStore.rows(
            cur,
            f"SELECT seq, org_id, kind, subject_id, payload FROM {t.changes}"
            " WHERE seq > ? ORDER BY seq LIMIT 5000",
            (self._cursor[1],),
            t.generation,
        )

    async def poll_once(self) -> int:
        start = self._cursor
        self._reading, self._read_from = True, start
        try:
            rows = await asyncio.to_thread(self._read)
        finally:
            self._reading, self._read_from = False, None
        moved = self._cursor
        if start is not None and moved is not None and moved[0] != start[0]:
            # A replay swapped the projections: what it rebuilt is not told change by change.
            payload = reset_payload("swapped", None, moved[1])
            for sub in list(self.subscribers):
                sub.reset(moved[1], payload)
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


# -- resuming after Last-Event-ID ---------------------------------------------------------


def swap_mark(cur: Cursor, t: Tables) -> int | None:
    """The seq `t`'s changes had when a replay's swap made it live (None: no swap did)."""
    row = ReadStore.one(
        cur, f"SELECT value FROM {META_TABLE} WHERE key = ?", (swap_mark_key(t),), t.generation
    )
    return None if row is None else int(row[0])


def head_seq(cur: Cursor, t: Tables) -> int:
    """The newest seq of `t`'s changes (0 when there are none)."""
    row = ReadStore.one(cur, f"SELECT MAX(seq) FROM {t.changes}", (), t.generation)
    return int(row[0] or 0) if row else 0


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed stream starts: after seq `after` of `generation`; `reason` says why
    that is not the client's Last-Event-ID (None: it is)."""

    generation: int
    after: int
    reason: str | None


def resume_point(cur: Cursor, t: Tables, last_event_id: int) -> ResumePoint:
    """Where to resume a client whose last event had id `last_event_id` (module docstring)."""
    mark = swap_mark(cur, t)
    row = ReadStore.one(cur, f"SELECT MIN(seq), MAX(seq) FROM {t.changes}", (), t.generation)
    low, head = (row[0], int(row[1] or 0)) if row else (None, 0)
    # Compared here, never bound: a 20-digit id need not fit the column's integer type.
    if mark is not None and last_event_id < mark:
        return ResumePoint(t.generation, mark, "swapped")
    if last_event_id > head:
        return ResumePoint(t.generation, head, "beyond_head")
    if low is not None and last_event_id < int(low) - 1:
        return ResumePoint(t.generation, int(low) - 1, "truncated")
    return ResumePoint(t.generation, last_event_id, None)


@dataclass(frozen=True)
class Page:
    """One read of a catch-up: `org`'s changes after seq `after` of `generation`, and the
    newest seq of all organisations' changes in the same snapshot."""

    generation: int
    after: int
    head: int
    rows: list[Row]


def catch_up_page(
    cur: Cursor, t: Tables, *, org: str, generation: int, after: int, limit: int
) -> Page:
    """Up to `limit` of `org`'s changes after `after`, in seq order. When another generation
    went live than `generation`, from its swap mark (or its head, without one) instead."""
    if t.generation != generation:
        mark = swap_mark(cur, t)
        after = mark if mark is not None else head_seq(cur, t)
    rows = ReadStore.rows(
        cur,
        f"SELECT seq, kind, payload FROM {t.changes} WHERE org_id = ? AND seq > ?"
        f" ORDER BY seq LIMIT {int(limit)}",
        (org, after),
        t.generation,
    )
    return Page(t.generation, after, head_seq(cur, t), rows)


class Resume:
    """A reconnecting client's catch-up, up to where it joins the live feed (`sub`)."""

    def __init__(
        self,
        feed: Feed,
        org: str,
        last_event_id: int,
        start: ResumePoint,
        page_size: int = CATCH_UP_PAGE,
    ) -> None:
        self.feed, self.org, self.last_event_id = feed, org, last_event_id
        self.start, self.page_size = start, max(1, page_size)
        self.sub: Subscriber | None = None  # once joined

    async def events(self) -> AsyncIterator[str]:
        """The catch-up's SSE text; ends having joined the feed (`sub`), or without when the
        server is stopping or a read failed (the client reconnects with its last id)."""
        generation, after = self.start.generation, self.start.after
        if self.start.reason is not None:
            payload = reset_payload(self.start.reason, self.last_event_id, after)
            yield format_event(after, RESET_EVENT, payload)
        while not self.feed.closing:
            read = partial(
                catch_up_page,
                org=self.org,
                generation=generation,
                after=after,
                limit=self.page_size,
            )
            try:
                page = await asyncio.to_thread(self.feed.store.read, read)
            except Exception:
                log.exception("change feed catch-up failed")
                return
            if page.generation != generation:
                yield format_event(
                    page.after, RESET_EVENT, reset_payload("swapped", None, page.after)
                )
            generation, after = page.generation, page.after
            for seq, kind, payload in page.rows:
                yield format_event(int(seq), str(kind), str(payload))
            if len(page.rows) >= self.page_size:
                after = int(page.rows[-1][0])
                continue
            # Every change of the org up to the snapshot's head has been delivered.
            after = max(after, page.head)
            self.sub = self.feed.join(self.org, generation, after)
            if self.sub is not None:
                return
            await asyncio.sleep(min(self.feed.poll_s, 0.05))  # the poller moves meanwhile


def parse_last_event_id(value: str, loc: list[str]) -> int:
    """A Last-Event-ID: a non-negative integer of at most LAST_EVENT_ID_DIGITS digits."""
    if len(value) <= LAST_EVENT_ID_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    msg = f"must be a non-negative integer of at most {LAST_EVENT_ID_DIGITS} digits"
    raise Problem(
        422,
        f"Last-Event-ID {msg}: the id of the last event received",
        errors=[{"loc": loc, "msg": msg}],
    )


def last_event_id_of(header: str | None, query: str | None) -> int | None:
    """The client's Last-Event-ID: the header, else `?last_event_id=`; empty counts as none."""
    if header is not None and header.strip():
        return parse_last_event_id(header.strip(), ["header", "last-event-id"])
    if query is not None and query.strip():
        return parse_last_event_id(query.strip(), ["query", "last_event_id"])
    return None


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
        last_event_id_header: Annotated[
            str | None,
            Header(
                alias="last-event-id",
                description="resume after this event id (EventSource sends it on reconnect)",
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Query(description="Last-Event-ID for clients that cannot send it (the header wins)"),
        ] = None,
    ) -> StreamingResponse:
        principal = await asyncio.to_thread(stream_principal, request, access_token)
        resume_after = last_event_id_of(last_event_id_header, last_event_id)
        feed = feed_of(request.app)
        heartbeat_s: float = getattr(request.app.state, "sse_heartbeat_s", HEARTBEAT_S)
        resume: Resume | None = None
        sub: Subscriber | None = None
        if resume_after is None:
            sub = feed.subscribe(principal.org_id)
        else:
            feed.attach()
            start = await asyncio.to_thread(
                feed.store.read, partial(resume_point, last_event_id=resume_after)
            )
            page_size: int = getattr(request.app.state, "sse_catch_up_page", CATCH_UP_PAGE)
            resume = Resume(feed, principal.org_id, resume_after, start, page_size)

        async def events() -> AsyncIterator[str]:
            live = sub
            try:
                yield "retry: 2000\n: connected\n\n"
                if resume is not None:
                    async for text in resume.events():
                        yield text
                    live = resume.sub
                while live is not None and not live.closed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(live.wake.wait(), heartbeat_s)
                    items = live.drain()
                    if not items and not live.closed:
                        yield ": heartbeat\n\n"
                    for seq, kind, payload in items:
                        yield format_event(seq, kind, payload)
            finally:
                for joined in (sub, resume.sub if resume is not None else None):
                    if joined is not None:
                        feed.unsubscribe(joined)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router

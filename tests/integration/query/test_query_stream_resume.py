"""GET /v1/stream resumed after Last-Event-ID, over a real uvicorn server and a real
projection store: exact catch-up of the org's later changes, an exact hand-over to the live
feed while changes are being written, stream.reset when it cannot be exact, 422 for a
malformed id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from services.projectionstore.meta import swap_mark_key
from services.projectionstore.schema import META_TABLE, Tables, iso
from services.query.live import RESET_EVENT, feed_of
from tests.integration.query.conftest import World

pytestmark = pytest.mark.integration


@dataclass
class Event:
    id: int | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Listener:
    """An SSE client in a thread: every line it read, parsed into events on demand."""

    url: str
    headers: dict[str, str]
    lines: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        _wait(lambda: ": connected" in self.lines, self.lines)

    def _run(self) -> None:
        with (
            httpx.Client(timeout=20) as client,
            client.stream("GET", self.url, headers=self.headers) as r,
        ):
            self.status.append(r.status_code)
            for line in r.iter_lines():
                self.lines.append(line)
                if self.stop.is_set():
                    return

    def events(self) -> list[Event]:
        found, block = [], {}  # type: ignore[var-annotated]
        for line in list(self.lines):
            if line == "":
                if "event" in block:
                    seq = block.get("id")
                    found.append(Event(int(seq) if seq else None, block["event"], block["data"]))
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = (
                    f"{block[name]}\n{value}" if name == "data" and name in block else value
                )
        return found

    def close(self) -> None:
        self.stop.set()  # the reader leaves at the next line (a heartbeat at the latest)
        self.thread.join(10)


def _wait(condition: Callable[[], bool], what: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _change(
    world: World, org: str, kind: str = "objective.updated", tables: Tables | None = None
) -> int:
    """Append one change with a subject of its own (nothing to coalesce); its seq."""
    t = tables or world.tables
    subject = str(uuid4())
    with world.db.transaction() as cur:
        cur.execute(
            f"INSERT INTO {t.changes} (org_id, kind, subject_id, payload, at) VALUES (?,?,?,?,?)",
            (org, kind, subject, json.dumps({"id": subject, "org": org}), iso(datetime.now(UTC))),
        )
        row = cur.execute(f"SELECT MAX(seq) FROM {t.changes}").fetchone()
    assert row is not None
    return int(row[0])


def _changes(
    world: World, org: str, after: int, tables: Tables | None = None
) -> list[tuple[int, str, str]]:
    t = tables or world.tables
    with world.db.transaction(write=False) as cur:
        rows = cur.execute(
            f"SELECT seq, kind, payload FROM {t.changes} WHERE org_id = ? AND seq > ? ORDER BY seq",
            (org, after),
        ).fetchall()
    return [(int(seq), str(kind), str(payload)) for seq, kind, payload in rows]


def _stream(served: str, world: World, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{served}/v1/stream" + (f"?{query}" if query else "")


def _auth(
    world: World, token: str | None = None, last_event_id: str | None = None
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token or world.token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


def test_resume_delivers_exactly_the_orgs_later_changes_then_goes_live(
    world: World, served: str
) -> None:
    kinds = ["objective.updated", "kpi.updated", "detection.raised", "detection.resolved"]
    mine = [_change(world, "acme", kinds[i % 4]) for i in range(3)]
    _change(world, "globex")
    mine += [_change(world, "acme", kinds[(i + 3) % 4]) for i in range(4)]
    _change(world, "globex")
    after = mine[1]
    expected = _changes(world, "acme", after)
    assert [seq for seq, _, _ in expected] == mine[2:]

    client = Listener(_stream(served, world), _auth(world, last_event_id=str(after)))
    _wait(lambda: len(client.events()) >= len(expected), client.lines)
    live = _change(world, "acme", "detection.raised")
    _change(world, "globex")
    _wait(lambda: any(e.id == live for e in client.events()), client.lines)
    time.sleep(0.4)  # anything else pending has come too
    client.close()

    got = client.events()
    assert client.status == [200]
    assert [(e.id, e.event, e.data) for e in got] == [
        *expected,
        (live, "detection.raised", got[-1].data),
    ]
    assert all(e.json()["org"] == "acme" for e in got), "another organisation's change"
    assert RESET_EVENT not in "\n".join(client.lines)


def test_the_query_parameter_is_a_fallback_and_the_header_wins(world: World, served: str) -> None:
    seqs = [_change(world, "acme") for _ in range(4)]
    by_query = Listener(
        _stream(served, world, access_token=world.token, last_event_id=str(seqs[0])), {}
    )
    both = Listener(
        _stream(served, world, last_event_id=str(seqs[0])), _auth(world, last_event_id=str(seqs[2]))
    )
    _wait(
        lambda: len(by_query.events()) >= 3 and len(both.events()) >= 1,
        (by_query.lines, both.lines),
    )
    time.sleep(0.4)
    by_query.close()
    both.close()
    assert [e.id for e in by_query.events()] == seqs[1:]
    assert [e.id for e in both.events()] == seqs[3:]


@pytest.mark.parametrize("someone_listens", [False, True], ids=["poller-idle", "poller-running"])
def test_no_gap_and_no_duplicate_across_the_hand_over_while_changes_are_written(
    world: World, served: str, someone_listens: bool
) -> None:
    """The catch-up reads small pages while a writer appends changes of both organisations:
    with another client listening the poller runs ahead of the catch-up; without, the
    resumed stream starts it. Either way every later change of the org arrives once."""
    app = world.client.app
    # One change per read: the catch-up takes long enough for the writer to write during it.
    app.state.sse_catch_up_page = 1  # type: ignore[attr-defined]
    feed = feed_of(app)  # type: ignore[arg-type]
    after = _change(world, "acme")
    with world.db.transaction() as cur:
        cur.executemany(
            f"INSERT INTO {world.tables.changes} (org_id, kind, subject_id, payload, at)"
            " VALUES (?,?,?,?,?)",
            [
                ("acme" if i % 3 else "globex", "detection.raised", str(uuid4()), "{}", "t")
                for i in range(900)
            ],
        )
    other = None
    if someone_listens:
        other = Listener(_stream(served, world), _auth(world, world.other))
        _wait(lambda: feed.polling, "the poller runs")

    def joined() -> bool:
        return any(s.org == "acme" for s in list(feed.subscribers))

    written_before_join: list[int] = []
    written_after_join: list[int] = []
    started = threading.Event()

    def write() -> None:
        i = 0
        while len(written_after_join) < 40:
            seq = _change(world, "acme" if i % 2 else "globex", "detection.raised")
            (written_after_join if joined() else written_before_join).append(seq)
            started.set()
            i += 1
            time.sleep(0.003)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    started.wait(10)
    client = Listener(_stream(served, world), _auth(world, last_event_id=str(after)))
    before_catch_up = len(written_before_join)
    writer.join(60)
    assert not writer.is_alive()
    last = _change(world, "acme", "kpi.updated")
    _wait(lambda: any(e.id == last for e in client.events()), client.lines[-5:])
    time.sleep(0.4)
    client.close()
    if other is not None:
        other.close()

    ids = [e.id for e in client.events()]
    expected = [seq for seq, _, _ in _changes(world, "acme", after)]
    assert len(ids) == len(set(ids)), "a change was delivered twice"
    assert ids == expected, f"missing: {sorted(set(expected) - set(ids))}"
    # The writer did write while the stream caught up (the hand-over was under load).
    during = len(written_before_join) - before_catch_up
    assert during > 10, (before_catch_up, written_before_join)


@pytest.mark.parametrize(
    ("header", "query", "loc"),
    [
        ("abc", None, ["header", "last-event-id"]),
        ("-1", None, ["header", "last-event-id"]),
        ("1.5", None, ["header", "last-event-id"]),
        ("0x10", None, ["header", "last-event-id"]),
        ("9" * 21, None, ["header", "last-event-id"]),
        ("9" * 5000, None, ["header", "last-event-id"]),  # beyond int()'s digit limit
        (None, "seven", ["query", "last_event_id"]),
        (None, "-3", ["query", "last_event_id"]),
    ],
)
def test_a_malformed_last_event_id_is_a_422_problem(
    world: World, served: str, header: str | None, query: str | None, loc: list[str]
) -> None:
    params = {"last_event_id": query} if query is not None else {}
    r = httpx.get(
        f"{served}/v1/stream", params=params, headers=_auth(world, last_event_id=header), timeout=10
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 422
    assert "Last-Event-ID" in body["detail"]
    assert body["errors"][0]["loc"] == loc


def test_a_well_formed_header_wins_over_a_malformed_query(world: World, served: str) -> None:
    seq = _change(world, "acme")
    client = Listener(
        _stream(served, world, last_event_id="junk"), _auth(world, last_event_id=str(seq - 1))
    )
    _wait(lambda: bool(client.events()), client.lines)
    client.close()
    assert client.status == [200]
    assert [e.id for e in client.events()] == [seq]


@pytest.mark.parametrize("beyond", [50, 10**20 - 1], ids=["a-little", "20-digits"])
def test_an_id_beyond_the_head_starts_at_the_head_with_a_notice(
    world: World, served: str, beyond: int
) -> None:
    for _ in range(3):
        head = _change(world, "acme")
    requested = head + beyond if beyond < 10**19 else beyond
    client = Listener(_stream(served, world), _auth(world, last_event_id=str(requested)))
    _wait(lambda: bool(client.events()), client.lines)
    time.sleep(0.3)  # the stream has joined the feed
    live = _change(world, "acme")
    _wait(lambda: any(e.id == live for e in client.events()), client.lines)
    time.sleep(0.3)
    client.close()
    got = client.events()
    assert client.status == [200]
    assert [(e.id, e.event) for e in got] == [(head, RESET_EVENT), (live, "objective.updated")]
    assert got[0].json() == {
        "reason": "beyond_head",
        "last_event_id": requested,
        "continues_after": head,
    }


def _swap(world: World, build: int, told: int) -> tuple[Tables, int, list[int]]:
    """What a replay's swap leaves: generation 2 with `build` changes of its own history, its
    swap mark, then `told` acme changes (the detections it reconciled), made live at once."""
    built = Tables(2)
    with world.db.transaction() as cur:
        for ddl in built.ddl(world.db.dialect):
            cur.execute(ddl)
        for i in range(build):
            cur.execute(
                f"INSERT INTO {built.changes} (org_id, kind, subject_id, payload, at)"
                " VALUES (?,?,?,?,?)",
                (
                    "acme",
                    "objective.updated",
                    f"build-{i}",
                    '{"build": true}',
                    iso(datetime.now(UTC)),
                ),
            )
        found = cur.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {built.changes}").fetchone()
        assert found is not None
        mark = int(found[0])
        cur.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)",
            (swap_mark_key(built), str(mark)),
        )
        for i in range(told):
            cur.execute(
                f"INSERT INTO {built.changes} (org_id, kind, subject_id, payload, at)"
                " VALUES (?,?,?,?,?)",
                (
                    "acme",
                    "detection.resolved",
                    f"told-{i}",
                    '{"told": true}',
                    iso(datetime.now(UTC)),
                ),
            )
        cur.execute(f"UPDATE {META_TABLE} SET value = '2' WHERE key = 'generation'")
        rows = cur.execute(
            f"SELECT seq FROM {built.changes} WHERE seq > ? ORDER BY seq", (mark,)
        ).fetchall()
    told_seqs = [int(r[0]) for r in rows]
    return built, int(mark), told_seqs


def test_an_id_of_a_swapped_out_generation_resumes_at_the_swap_mark_with_a_notice(
    world: World, served: str
) -> None:
    old = [_change(world, "acme") for _ in range(4)]
    built, mark, told = _swap(world, build=10, told=2)
    client = Listener(_stream(served, world), _auth(world, last_event_id=str(old[1])))
    _wait(lambda: len(client.events()) >= 3, client.lines)
    time.sleep(0.3)
    live = _change(world, "acme", tables=built)
    _wait(lambda: any(e.id == live for e in client.events()), client.lines)
    client.close()
    got = client.events()
    assert [(e.id, e.event) for e in got] == [
        (mark, RESET_EVENT),
        *[(seq, "detection.resolved") for seq in told],
        (live, "objective.updated"),
    ], "the build's own history is not replayed, nor the old generation's"
    assert got[0].json() == {"reason": "swapped", "last_event_id": old[1], "continues_after": mark}


def test_a_connected_stream_is_told_of_a_swap(world: World, served: str) -> None:
    feed = feed_of(world.client.app)  # type: ignore[arg-type]
    client = Listener(_stream(served, world), _auth(world))
    _wait(lambda: feed.polling, "the poller runs")
    time.sleep(0.3)  # the feed has taken its starting point
    before = _change(world, "acme")
    _wait(lambda: any(e.id == before for e in client.events()), client.lines)
    _, mark, told = _swap(world, build=3, told=1)
    _wait(lambda: len(client.events()) >= 3, client.lines)
    time.sleep(0.3)
    client.close()
    got = client.events()
    assert [(e.id, e.event) for e in got] == [
        (before, "objective.updated"),
        (mark, RESET_EVENT),
        (told[0], "detection.resolved"),
    ]
    assert got[1].json() == {"reason": "swapped", "last_event_id": None, "continues_after": mark}


def test_an_id_older_than_the_kept_changes_says_they_were_truncated(
    world: World, served: str
) -> None:
    seqs = [_change(world, "acme") for _ in range(6)]
    with world.db.transaction() as cur:  # a retention that pruned the oldest changes
        cur.execute(f"DELETE FROM {world.tables.changes} WHERE seq <= ?", (seqs[2],))
    client = Listener(_stream(served, world), _auth(world, last_event_id=str(seqs[0])))
    _wait(lambda: len(client.events()) >= 4, client.lines)
    time.sleep(0.3)
    client.close()
    got = client.events()
    assert [(e.id, e.event) for e in got] == [
        (seqs[2], RESET_EVENT),
        *[(seq, "objective.updated") for seq in seqs[3:]],
    ]
    assert got[0].json() == {
        "reason": "truncated",
        "last_event_id": seqs[0],
        "continues_after": seqs[2],
    }

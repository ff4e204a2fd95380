"""The event-store adapter on SQLite and PostgreSQL: one behaviour suite, both backends."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from uuid import uuid4

import pytest

import events
from services.eventstore import ConcurrencyError, EventStore, StoreUnavailableError
from services.settings import Settings
from tests.support.samples import sample

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings: Settings):  # type: ignore[no-untyped-def]
    s = EventStore.from_settings(settings)
    yield s
    s.close()


def stream(n: int) -> list[events.Event]:
    sid = uuid4()
    out: list[events.Event] = []
    prev = None
    kinds = ["objective.drafted", "objective.revised", "objective.closed", "objective.reopened"]
    for i in range(n):
        e = events.seal(sample(kinds[i % 4], stream_id=sid, version=i + 1), prev)
        out.append(e)
        prev = e.hash
    return out


def test_append_read_and_positions(store: EventStore) -> None:
    assert store.max_position() == 0
    first = stream(3)
    pos = store.append(first)
    assert pos == store.max_position()
    assert store.read_stream(first[0].stream_id) == first
    assert store.read_stream(first[0].stream_id, gt=1) == first[1:]
    notes = store.notifications(0, 100)
    assert [n.type for n in notes] == [e.type for e in first]
    assert [n.decode() for n in notes] == first
    assert [n.position for n in notes] == sorted(n.position for n in notes)
    assert store.notifications(notes[-1].position, 100) == []


def test_a_taken_stream_version_is_a_conflict_and_appends_nothing(store: EventStore) -> None:
    s = stream(2)
    store.append(s[:1])
    before = store.max_position()
    with pytest.raises(ConcurrencyError):
        store.append([s[1], s[0]])  # the batch is atomic: s[1] must not land either
    assert store.max_position() == before
    assert store.read_stream(s[0].stream_id) == s[:1]


def test_concurrent_writers_one_wins_per_version(store: EventStore) -> None:
    s = stream(1)
    store.append(s)
    rivals = [
        events.seal(sample("objective.revised", stream_id=s[0].stream_id, version=2), s[0].hash)
        for _ in range(8)
    ]
    outcomes: list[str] = []

    def write(e: events.Event) -> None:
        try:
            store.append([e])
            outcomes.append("ok")
        except ConcurrencyError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(e,)) for e in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == 7
    assert events.verify_chain(store.read_stream(s[0].stream_id)) is None


def test_append_new_skips_what_exists_without_failing_the_batch(store: EventStore) -> None:
    r1 = events.seal(sample("reading.recorded"), None)
    r2 = events.seal(sample("reading.recorded"), None)
    assert store.append_new([r1])[0] is not None
    positions = store.append_new([r1, r2, r2])
    assert positions[0] is None
    assert positions[1] is not None
    assert positions[2] is None
    assert [n.decode() for n in store.notifications(0, 10)] == [r1, r2]


def test_stream_ids_walk_every_stream(store: EventStore) -> None:
    streams = [stream(2) for _ in range(5)]
    for s in streams:
        store.append(s)
    seen = []
    after = None
    while page := store.stream_ids(after, limit=2):
        seen.extend(page)
        after = page[-1]
    assert sorted(seen) == sorted(s[0].stream_id for s in streams)


def _queued(store: EventStore, calls: list[Callable[[], object]]) -> list[object]:
    """Run each call (an append) on its own thread while the test holds the writer lock, so
    all of them queue for one group commit; release and return each call's answer (or
    exception)."""
    answers: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            answers[i] = calls[i]()
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with store._writer:
        for t in threads:
            t.start()
        for _ in range(500):
            if len(store._waiting) == len(calls):
                break
            threading.Event().wait(0.01)
        assert len(store._waiting) == len(calls), "every batch queued behind the lock"
    for t in threads:
        t.join(30)
    return answers


def test_sqlite_group_commit_keeps_each_batchs_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = EventStore.from_settings(Settings(data_dir=tmp_path))
    try:
        shared = events.seal(sample("reading.recorded"), None)
        own = [events.seal(sample("reading.recorded"), None) for _ in range(3)]
        batches = [[own[0], shared], [shared, own[1], own[1]], [own[2]]]
        answers = _queued(store, [functools.partial(store.append_new, b) for b in batches])
        first, second, third = answers
        assert all(isinstance(a, list) for a in answers), answers
        assert isinstance(first, list)
        assert isinstance(second, list)
        assert isinstance(third, list)
        # One stored copy of `shared`: whichever batch the group wrote first owns it, the
        # other counts a duplicate; a row repeated within a batch is a duplicate too.
        assert [first[1] is None, second[0] is None].count(True) == 1
        assert second[2] is None
        assert None not in (first[0], second[1], third[0])
        stored = [n.decode() for n in store.notifications(0, 10)]
        assert sorted(str(e.event_id) for e in stored) == sorted(
            str(e.event_id) for e in [shared, *own]
        )
        positions = [p for a in answers for p in a if p is not None]  # type: ignore[union-attr]
        assert sorted(positions) == [n.position for n in store.notifications(0, 10)]
    finally:
        store.close()


def test_sqlite_group_commit_fails_as_one_and_stores_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = EventStore.from_settings(Settings(data_dir=tmp_path))
    try:
        good = events.seal(sample("reading.recorded"), None)
        bad = events.seal(sample("reading.recorded"), None)
        # A row SQLite cannot bind (a state that is not bytes) fails the group's transaction.
        rows = [(bad.stream_id.hex, 1, bad.type, {"not": "bytes"})]
        answers = _queued(
            store, [lambda: store.append_new([good]), lambda: store.append_new_encoded(rows)]
        )
        assert all(isinstance(a, StoreUnavailableError) for a in answers), answers
        assert store.max_position() == 0, "nothing of a failed group is stored"
        # The store still works, and the good batch can be sent again.
        assert store.append_new([good])[0] == store.max_position()
    finally:
        store.close()

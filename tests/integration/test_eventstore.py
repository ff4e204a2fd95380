"""The event-store adapter on SQLite and PostgreSQL: one behaviour suite, both backends."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest

import events
from services.eventstore import ConcurrencyError, EventStore
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

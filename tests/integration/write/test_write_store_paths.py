"""Commands and readings against the real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

import events
from services.command.decisions import Context, Ids, Refused
from services.command.service import CommandService, Stale
from services.eventstore import EventStore
from services.http.idempotency import Answer, IdempotencyStore, run_once
from services.ingest.service import ReadingsService
from services.settings import Settings

pytestmark = pytest.mark.integration

PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    opened = EventStore.from_settings(settings)
    yield opened
    opened.close()


def ctx(org: str = "acme", seed: str | None = None) -> Context:
    now = datetime.now(UTC)
    return Context(org_id=org, occurred_at=now, recorded_at=now, ids=Ids(seed))


def test_two_concurrent_writers_both_land_and_the_chain_holds(store: EventStore) -> None:
    service = CommandService(store)
    oid = uuid.uuid4()
    service.create_objective(ctx(), oid, {"title": "O", "owner": "a", "level": "team",
                                          "period": PERIOD})  # fmt: skip
    kr = uuid.uuid4()
    service.add_key_result(ctx(), oid, kr, None, {"title": "K", "kind": "metric", "start": 0.0,
                                                  "target": 10.0})  # fmt: skip
    errors: list[BaseException] = []
    landed: list[float] = []
    barrier = threading.Barrier(2)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(15):
            value = float(n * 100 + i)
            try:
                service.check_in(ctx(), oid, kr, None, {"value": value})
                landed.append(value)
            except Refused:  # a clean 409 after many collisions is allowed; a lost write is not
                pass
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    stream = store.read_stream(oid)
    assert events.verify_chain(stream) is None
    values = sorted(e.value for e in stream if isinstance(e, events.KeyResultCheckedIn))
    assert values == sorted(landed), "every acknowledged check-in is stored, and only those"
    assert len(landed) >= 25, "retries make concurrent writers succeed"
    assert {v // 100 for v in landed} == {0, 1}


def test_if_match_loser_gets_stale_and_appends_nothing(store: EventStore) -> None:
    service = CommandService(store)
    oid = uuid.uuid4()
    service.create_objective(ctx(), oid, {"title": "O", "owner": "a", "level": "team",
                                          "period": PERIOD})  # fmt: skip
    service.revise_objective(ctx(), oid, 1, {"title": "first"})
    with pytest.raises(Stale) as raised:
        service.revise_objective(ctx(), oid, 1, {"title": "second"})
    assert raised.value.current == 2
    assert [e.type for e in store.read_stream(oid)] == ["objective.drafted", "objective.revised"]


def test_idempotent_retry_after_a_crash_finds_the_committed_events(
    store: EventStore, settings: Settings
) -> None:
    service = CommandService(store)
    fields = {"name": "K", "direction": "increase", "target": 5.0, "interval": "day",
              "aggregation": "sum"}  # fmt: skip
    first = service.define_kpi(ctx(seed="acme:k1"), Ids("acme:k1").resource(), fields)
    # The answer was never recorded (crash): the same key re-runs and finds the same event.
    again = service.define_kpi(ctx(seed="acme:k1"), Ids("acme:k1").resource(), fields)
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    assert len(store.read_stream(first.events[0].stream_id)) == 1
    keys = IdempotencyStore.from_settings(settings)
    calls: list[int] = []

    def produce(_retried: bool) -> Answer:
        calls.append(1)
        return Answer(201, {"n": len(calls)})

    assert run_once(keys, "acme", "key", "fp", produce).body == {"n": 1}
    assert run_once(keys, "acme", "key", "fp", produce).body == {"n": 1}
    assert run_once(keys, "other-org", "key", "fp", produce).body == {"n": 2}
    keys.close()


def test_readings_batch_with_good_bad_and_duplicate_items(store: EventStore) -> None:
    service = CommandService(store)
    kpi, retired = uuid.uuid4(), uuid.uuid4()
    for k in (kpi, retired):
        service.define_kpi(ctx(), k, {"name": "K", "direction": "increase", "target": 5.0,
                                      "interval": "day", "aggregation": "sum"})  # fmt: skip
    service.retire_kpi(ctx(), retired, None, None)
    foreign = uuid.uuid4()
    service.define_kpi(ctx("globex"), foreign, {"name": "K", "direction": "increase",
                       "target": 5.0, "interval": "day", "aggregation": "sum"})  # fmt: skip
    ingest = ReadingsService(store)
    good = {"kpi_id": str(kpi), "value": 1.5, "observed_at": "2026-01-02T00:00:00Z"}
    items = [
        good,
        {**good, "value": 2.5, "reading_id": "r-1"},
        {**good, "kpi_id": str(retired)},
        {**good, "kpi_id": str(foreign)},
        {**good, "kpi_id": str(uuid.uuid4())},
        {**good, "observed_at": "2026-01-02T00:00:00"},
        {**good, "value": "Infinity"},
        {**good, "observed_at": "2999-01-01T00:00:00Z"},
        good,
        {**good, "value": 9.0, "reading_id": "r-1"},
        {"kpi_id": str(kpi)},
    ]
    before = store.max_position()
    answer = ingest.accept("acme", items)
    assert answer["accepted"] == 2
    assert answer["duplicates"] == 2
    assert [r["index"] for r in answer["rejected"]] == [2, 3, 4, 5, 6, 7, 10]
    assert "retired" in answer["rejected"][0]["error"]
    assert answer["position"] == store.max_position() == before + 2
    stored = [n.decode() for n in store.notifications(before, 100)]
    assert all(events.verify_chain([e]) is None for e in stored)
    assert {e.reading_id for e in stored} >= {"r-1"}  # type: ignore[attr-defined]
    # Sending the batch again stores nothing new.
    again = ingest.accept("acme", items)
    assert (again["accepted"], again["duplicates"]) == (0, 4)
    assert store.max_position() == before + 2

"""Commands and readings against the real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

import events
from services.command import app as command_app
from services.command import objective as objective_aggregate
from services.command.decisions import Context, Ids, Refused
from services.command.service import CommandService, Stale
from services.eventstore import EventStore, StoreUnavailableError
from services.eventstore import store as eventstore_module
from services.http.app import service_app
from services.http.idempotency import (
    RETENTION_S,
    STALE_PENDING_S,
    Answer,
    IdempotencyStore,
    run_once,
)
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


def metric_objective(service: CommandService) -> tuple[uuid.UUID, uuid.UUID]:
    """A new objective with one metric key result: (objective id, key result id)."""
    oid, kr = uuid.uuid4(), uuid.uuid4()
    service.create_objective(ctx(), oid, {"title": "O", "owner": "a", "level": "team",
                                          "period": PERIOD})  # fmt: skip
    service.add_key_result(ctx(), oid, kr, None, {"title": "K", "kind": "metric", "start": 0.0,
                                                  "target": 10.0})  # fmt: skip
    return oid, kr


def check_in_together(
    service: CommandService, oid: uuid.UUID, kr: uuid.UUID, writers: int, each: int
) -> tuple[list[float], list[BaseException]]:
    """`writers` threads, started together, each checking in `each` values: (the values
    acknowledged, the errors)."""
    landed: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(each):
            value = float(n * 100 + i)
            try:
                service.check_in(ctx(), oid, kr, None, {"value": value})
                landed.append(value)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return landed, errors


def test_two_concurrent_writers_both_land_and_the_chain_holds(store: EventStore) -> None:
    service = CommandService(store)
    oid, kr = metric_objective(service)
    landed, errors = check_in_together(service, oid, kr, writers=2, each=15)
    assert errors == []
    stream = store.read_stream(oid)
    assert events.verify_chain(stream) is None
    values = sorted(e.value for e in stream if isinstance(e, events.KeyResultCheckedIn))
    assert values == sorted(landed), "every acknowledged check-in is stored, and only those"
    assert len(landed) == 30, "retries make concurrent writers succeed"


def test_many_writers_of_one_stream_are_all_applied(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid commands are applied, however many clients write one stream: a command that
    keeps losing the race goes on under the process's lock of that stream (it was refused
    with a 409 after ten tries: 16 of 200 check-ins from 20 clients), never a store lock,
    which would hold up every other organisation's re-parenting."""
    store_locks: list[str] = []
    serialised = store.serialised

    def counted(name: str) -> Any:
        store_locks.append(name)
        return serialised(name)

    monkeypatch.setattr(store, "serialised", counted)
    service = CommandService(store)
    oid, kr = metric_objective(service)
    _, errors = check_in_together(service, oid, kr, writers=20, each=8)
    assert errors == []
    stream = store.read_stream(oid)
    assert events.verify_chain(stream) is None
    assert sum(isinstance(e, events.KeyResultCheckedIn) for e in stream) == 160
    assert store_locks == []


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


def test_an_expired_idempotency_key_with_another_request_is_a_new_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = service_app(settings, "commands", [command_app.install])
    clock = [time.time()]
    app.state.idempotency.clock = lambda: clock[0]
    store: EventStore = app.state.event_store
    auth = {"Authorization": f"Bearer {app.state.tokens.create('acme', ['write'])}"}
    later = RETENTION_S + 3600  # the key's record has been purged
    with TestClient(app, raise_server_exceptions=False) as client:

        def post(path: str, body: dict[str, Any], key: str | None = None) -> Any:
            headers = {**auth, **({"Idempotency-Key": key} if key else {})}
            return client.post(path, json=body, headers=headers)

        objective = post("/v1/objectives", {"title": "O", "owner": "a", "level": "team",
                         "period": PERIOD}, key="nightly-sync")  # fmt: skip
        assert objective.status_code == 201, objective.text
        clock[0] += later
        kpi = post("/v1/kpis", {"name": "Revenue", "direction": "increase", "target": 10,
                   "interval": "day", "aggregation": "sum"}, key="nightly-sync")  # fmt: skip
        assert kpi.status_code == 201, kpi.text
        assert kpi.json()["id"] != objective.json()["id"], "not the objective's answer"
        assert [e.type for e in store.read_stream(uuid.UUID(kpi.json()["id"]))] == ["kpi.defined"]

        oid = objective.json()["id"]
        metric = {"title": "K", "kind": "metric", "start": 0, "target": 10}
        kr = post(f"/v1/objectives/{oid}/key-results", metric).json()["id"]
        check_ins = f"/v1/objectives/{oid}/key-results/{kr}/check-ins"

        def values() -> list[float | None]:
            stream = store.read_stream(uuid.UUID(oid))
            return [e.value for e in stream if isinstance(e, events.KeyResultCheckedIn)]

        first = post(check_ins, {"value": 3}, key="ci")
        clock[0] += later
        second = post(check_ins, {"value": 7}, key="ci")
        assert second.status_code == 201, second.text
        assert second.json()["version"] == first.json()["version"] + 1
        assert values() == [3.0, 7.0]

        # What the derived ids are for still works: a crash between the append and
        # recording the answer, then a retry of the same request, gets the same answer.
        real_complete = IdempotencyStore.complete

        def crash_once(*args: Any) -> None:
            monkeypatch.setattr(IdempotencyStore, "complete", real_complete)
            raise RuntimeError("crashed before recording the answer")

        monkeypatch.setattr(IdempotencyStore, "complete", crash_once)
        assert post(check_ins, {"value": 9}, key="ci-2").status_code == 500
        assert values() == [3.0, 7.0, 9.0]
        clock[0] += STALE_PENDING_S + 1
        retried = post(check_ins, {"value": 9}, key="ci-2")
        assert retried.status_code == 201, retried.text
        assert retried.json()["version"] == second.json()["version"] + 1
        assert values() == [3.0, 7.0, 9.0], "the retry appended nothing"


def test_concurrent_reparentings_cannot_make_a_cycle(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers on one database, as two front door processes: each has its own store.
    other = EventStore.from_settings(settings)
    workers = [CommandService(store), CommandService(other)]
    a, b = uuid.uuid4(), uuid.uuid4()
    for oid in (a, b):
        workers[0].create_objective(ctx(), oid, {"title": "O", "owner": "a", "level": "team",
                                                 "period": PERIOD})  # fmt: skip
    # Force the losing interleaving: each check waits until the other has checked too,
    # before either appends. Serialised, the second check cannot start before the first
    # append, so the wait times out and the first goes on alone.
    checked = threading.Barrier(2, timeout=1.5)
    real_check = objective_aggregate.check_parent

    def check_then_wait(*args: Any) -> None:
        real_check(*args)
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait()

    monkeypatch.setattr(objective_aggregate, "check_parent", check_then_wait)
    outcomes: dict[uuid.UUID, str] = {}

    def reparent(worker: CommandService, child: uuid.UUID, parent: uuid.UUID) -> None:
        try:
            worker.revise_objective(ctx(), child, None, {"parent_id": parent})
            outcomes[child] = "realigned"
        except Refused as exc:
            outcomes[child] = str(exc)

    threads = [
        threading.Thread(target=reparent, args=(workers[0], a, b)),
        threading.Thread(target=reparent, args=(workers[1], b, a)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        other.close()
    assert sorted(outcomes.values()) == ["realigned", "this parent would make a cycle"]
    parents = {
        oid: objective_aggregate.fold(store.read_stream(oid)).parent_id  # type: ignore[union-attr]
        for oid in (a, b)
    }
    assert parents in ({a: b, b: None}, {a: None, b: a}), "no cycle was stored"


def test_serialised_excludes_other_processes_and_gives_up_after_a_while(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = EventStore.from_settings(settings)  # another process's store, in effect
    entered = threading.Event()

    def enter() -> None:
        with other.serialised("hierarchy:acme"):
            entered.set()

    try:
        with store.serialised("hierarchy:acme"):
            waiter = threading.Thread(target=enter)
            waiter.start()
            assert not entered.wait(0.5), "the lock is held elsewhere"
            if store.is_postgres:  # other names do not wait; SQLite has one lock for all
                third = EventStore.from_settings(settings)
                with third.serialised("hierarchy:globex"):
                    pass
                third.close()
        waiter.join(10)
        assert entered.is_set(), "released at the end of the block"
        with pytest.raises(KeyError), store.serialised("hierarchy:acme"):
            raise KeyError("the block's own error passes through")
        if store.is_postgres:
            monkeypatch.setattr(eventstore_module, "SERIALISED_WAIT_S", 1)
            with (
                store.serialised("hierarchy:acme"),
                pytest.raises(StoreUnavailableError),
                other.serialised("hierarchy:acme"),
            ):
                pass
        with other.serialised("hierarchy:acme"):
            pass  # free again after the error and the timeout
    finally:
        other.close()


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


def test_ingest_checks_a_requests_kpis_in_one_read_of_their_heads(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request sees a retirement committed before it (KpiDirectory), at the cost of
    one read of the KPIs' stream heads: a stream is read again only once it moved (a
    request naming 100 KPIs read the store 100 times)."""
    from services.ingest.kpis import KpiDirectory

    service = CommandService(store)
    kpis = [uuid.uuid4() for _ in range(3)]
    for kpi in kpis:
        service.define_kpi(ctx(), kpi, {"name": "K", "direction": "increase", "target": 10.0,
                                        "interval": "day", "aggregation": "sum"})  # fmt: skip
    directory = KpiDirectory(store)
    unknown = uuid.uuid4()
    first = directory.lookup_many([*kpis, unknown])
    assert first[unknown] is None
    assert all(f is not None and not f.retired and f.org_id == "acme" for k, f in first.items()
               if k != unknown)  # fmt: skip
    reads: list[uuid.UUID] = []
    read_stream = store.read_stream

    def counted(stream_id: uuid.UUID, **kw: Any) -> list[events.Event]:
        reads.append(stream_id)
        return read_stream(stream_id, **kw)

    monkeypatch.setattr(store, "read_stream", counted)
    assert directory.lookup_many(kpis) == {k: first[k] for k in kpis}
    assert reads == [], "nothing moved: no stream is read"
    service.retire_kpi(ctx(), kpis[1], None, None)
    reads.clear()  # the command's own
    after = directory.lookup_many(kpis)
    assert reads == [kpis[1]]
    assert [after[k].retired for k in kpis] == [False, True, False]  # type: ignore[union-attr]
    assert store.stream_heads([*kpis, unknown]) == {kpis[0]: 1, kpis[1]: 2, kpis[2]: 1}


def test_a_command_queued_too_long_for_its_stream_is_a_503_not_a_wait_without_end(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate of a stream bounds the wait (it had none: 14 s at 40 writers)."""
    from services.command import service as service_module

    monkeypatch.setattr(service_module, "OPTIMISTIC_ATTEMPTS", 0)  # straight to the gate
    monkeypatch.setattr(service_module, "GATE_WAIT_S", 0.2)
    service = CommandService(store)
    oid, kr = metric_objective(service)
    # Another command of this process holds the gate.
    with service._gate(oid), pytest.raises(service_module.Contended):
        service.check_in(ctx(), oid, kr, None, {"value": 1.0})
    service.check_in(ctx(), oid, kr, None, {"value": 2.0})
    assert service._gates == {}, "no gate is left behind"
    values = [e.value for e in store.read_stream(oid) if isinstance(e, events.KeyResultCheckedIn)]
    assert values == [2.0]

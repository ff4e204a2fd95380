"""Idempotency keys, token hashing and scopes, the readings fast path, relay records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import events
from contracts.readings import ReadingIn
from services.auth.tokens import TokenStore, hash_token
from services.eventstore import StoredNotification
from services.http.idempotency import Answer, IdempotencyStore, fingerprint, run_once
from services.http.problems import Problem, install_problem_handlers
from services.http.security import Ingester, Reader, Writer
from services.ingest.kpis import KpiFacts
from services.ingest.readings import canonical_reading, judge
from services.kafka.partitioning import partition_of
from services.projectionstore.db import Database
from services.relay.records import to_records, watermark_headers, watermark_value
from services.settings import Settings

NOW = datetime(2026, 2, 1, 12, tzinfo=UTC)

# -- idempotency -------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> IdempotencyStore:
    clock = [1000.0]
    store = IdempotencyStore(Database("sqlite", path=tmp_path / "i.sqlite"), clock=lambda: clock[0])
    store.clock_cell = clock  # type: ignore[attr-defined]
    return store


def counting() -> tuple[list[int], Any]:
    calls: list[int] = []

    def produce(_retried: bool) -> Answer:
        calls.append(1)
        return Answer(201, {"n": len(calls)}, {"ETag": '"1"'})

    return calls, produce


def test_same_key_same_body_replays_the_first_answer(keys: IdempotencyStore) -> None:
    calls, produce = counting()
    first = run_once(keys, "acme", "k", fingerprint("POST", "/x", "{}"), produce)
    again = run_once(keys, "acme", "k", fingerprint("POST", "/x", "{}"), produce)
    assert again == first
    assert len(calls) == 1
    assert again.headers == {"ETag": '"1"'}


def test_same_key_other_body_is_422(keys: IdempotencyStore) -> None:
    _, produce = counting()
    run_once(keys, "acme", "k", fingerprint("POST", "/x", "a"), produce)
    with pytest.raises(Problem) as raised:
        run_once(keys, "acme", "k", fingerprint("POST", "/x", "b"), produce)
    assert raised.value.status == 422


def test_keys_are_scoped_by_organisation_and_durable(
    keys: IdempotencyStore, tmp_path: Path
) -> None:
    calls, produce = counting()
    run_once(keys, "acme", "k", "fp", produce)
    run_once(keys, "globex", "k", "fp", produce)
    assert len(calls) == 2
    reopened = IdempotencyStore(Database("sqlite", path=tmp_path / "i.sqlite"), clock=keys.clock)
    assert run_once(reopened, "acme", "k", "fp", produce).body == {"n": 1}


def test_a_failed_request_releases_its_key(keys: IdempotencyStore) -> None:
    def failing(_retried: bool) -> Answer:
        raise Problem(409, "no")

    with pytest.raises(Problem):
        run_once(keys, "acme", "k", "fp", failing)
    calls, produce = counting()
    assert run_once(keys, "acme", "k", "fp", produce).status == 201
    assert len(calls) == 1


def test_a_pending_key_is_409_then_taken_over_when_stale(keys: IdempotencyStore) -> None:
    assert keys.begin("acme", "k", "fp").retried is False  # type: ignore[union-attr]
    with pytest.raises(Problem) as raised:
        keys.begin("acme", "k", "fp")
    assert raised.value.status == 409
    keys.clock_cell[0] += 31  # type: ignore[attr-defined]
    begun = keys.begin("acme", "k", "fp")
    assert begun.retried is True  # type: ignore[union-attr]


# -- tokens and scopes -------------------------------------------------------------------


def test_tokens_are_stored_hashed_and_verified(tmp_path: Path) -> None:
    store = TokenStore.from_settings(Settings(data_dir=tmp_path))
    token = store.create("acme", ["read", "ingest"])
    rows = store.db.transaction(write=False)
    with rows as cur:
        stored = cur.execute("SELECT token_hash, org_id, scopes FROM api_tokens").fetchall()
    assert stored == [(hash_token(token), "acme", "ingest,read")]
    assert token not in str(stored)
    principal = store.verify(token)
    assert principal is not None
    assert principal.org_id == "acme"
    assert store.verify(token + "x") is None
    assert store.verify("not-a-token") is None
    with pytest.raises(ValueError, match="unknown scopes"):
        store.create("acme", ["admin"])


def test_scope_dependencies_answer_401_and_403(tmp_path: Path) -> None:
    app = FastAPI()
    app.state.tokens = TokenStore.from_settings(Settings(data_dir=tmp_path))
    install_problem_handlers(app)

    @app.get("/r")
    def r(p: Reader) -> str:
        return p.org_id

    @app.get("/w")
    def w(p: Writer) -> str:
        return p.org_id

    @app.get("/i")
    def i(p: Ingester) -> str:
        return p.org_id

    reader = app.state.tokens.create("acme", ["read"])
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {reader}"}
    assert client.get("/r").status_code == 401
    assert client.get("/r", headers={"Authorization": "Bearer okr_nope"}).status_code == 401
    assert client.get("/r", headers=auth).json() == "acme"
    for path in ("/w", "/i"):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"


# -- readings fast path ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "value", "source"),
    [
        ("2026-01-02T03:04:05Z", 1.0, None),
        ("2026-01-02T03:04:05.123+02:00", -0.1, "crm"),
        ("2026-01-02T03:04:05.000001-07:30", 1e300, 'ünï"code'),
        ("2026-01-02T03:04:05Z", 42, ""),
    ],
)
def test_fast_canonical_reading_equals_the_pydantic_encoding(
    observed: str, value: float, source: str | None
) -> None:
    reading = ReadingIn.model_validate(
        {"kpi_id": str(uuid.uuid4()), "value": value, "observed_at": observed, "source": source}
    )
    stream_id = uuid.uuid4()
    fast = canonical_reading("acme", "ingest", reading, "r-1", stream_id, NOW)
    model = events.ReadingRecorded(
        event_id=stream_id,
        org_id="acme",
        stream_id=stream_id,
        stream_version=1,
        occurred_at=reading.observed_at,
        recorded_at=NOW,
        actor="ingest",
        kpi_id=reading.kpi_id,
        value=reading.value,
        observed_at=reading.observed_at,
        reading_id="r-1",
        source=source,
    )
    assert fast == events.encode(events.seal(model, None))
    assert events.verify_chain([events.decode(fast)]) is None


def test_judge_rejects_by_index_and_counts_in_batch_duplicates() -> None:
    kpi, retired, foreign = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    facts = {
        kpi: KpiFacts("acme", False, 1),
        retired: KpiFacts("acme", True, 2),
        foreign: KpiFacts("globex", False, 1),
    }
    ok = {"kpi_id": str(kpi), "value": 1, "observed_at": "2026-02-01T11:00:00Z"}
    future = (NOW + timedelta(minutes=6)).isoformat()
    soon = (NOW + timedelta(minutes=4)).isoformat()
    items = [
        ok,
        ok,
        {**ok, "kpi_id": str(retired)},
        {**ok, "kpi_id": str(foreign)},
        {**ok, "observed_at": future},
        {**ok, "observed_at": soon},
        {**ok, "value": float("nan")},
        "not an object",
        {**ok, "extra": 1},
        {**ok, "reading_id": ""},
    ]
    judged = judge("acme", items, facts.get, NOW)
    assert len(judged.rows) == 2
    assert judged.duplicates == 1
    assert [r["index"] for r in judged.rejected] == [2, 3, 4, 6, 7, 8, 9]
    assert "unknown KPI" in judged.rejected[1]["error"], "another org's KPI looks unknown"
    ids = {row[0] for row in judged.rows}
    assert len(ids) == 2


# -- relay records -----------------------------------------------------------------------


def note(position: int, event: events.Event) -> StoredNotification:
    return StoredNotification(
        position, event.stream_id.hex, event.stream_version, event.type, events.encode(event)
    )


def reading(kpi_id: uuid.UUID, n: int) -> events.Event:
    sid = uuid.uuid4()
    return events.ReadingRecorded(
        event_id=sid, org_id="acme", stream_id=sid, stream_version=1, occurred_at=NOW,
        recorded_at=NOW, kpi_id=kpi_id, value=float(n), observed_at=NOW, reading_id=f"r{n}",
    )  # fmt: skip


def kpis_on_partitions(wanted: list[int], partitions: int) -> list[uuid.UUID]:
    """KPI ids (the same on every run) that fall on the `wanted` partitions, in order."""
    found: list[uuid.UUID] = []
    n = 0
    while len(found) < len(wanted):
        kpi_id = uuid.uuid5(uuid.NAMESPACE_URL, f"okrstream-test:relay-kpi-{n}")
        if partition_of(str(kpi_id), partitions) == wanted[len(found)]:
            found.append(kpi_id)
        n += 1
    return found


def test_relay_records_pack_readings_per_partition_and_keep_positions_rising() -> None:
    a, b, c = kpis_on_partitions([1, 1, 2], partitions=4)
    goal = events.seal(
        events.KpiDefined(
            event_id=uuid.uuid4(), org_id="acme", stream_id=a, stream_version=1,
            occurred_at=NOW, recorded_at=NOW, name="K", direction="increase", target=1.0,
            amber=0.9, interval="day", aggregation="sum",
        ),
        None,
    )  # fmt: skip
    kpi_of = {2: a, 3: b, 4: c, 5: a, 6: b, 7: a, 8: c, 9: b}
    batch = [note(1, goal)] + [note(p, reading(kpi_of[p], p)) for p in range(2, 10)]
    records, skipped = to_records(batch, readings_per_record=3, partitions=4)
    assert skipped == []
    assert [r.position for r in records] == sorted(r.position for r in records)
    first = records[0]
    assert first.topic == "okr.goal-events.v1"
    assert first.key == str(a).encode()
    assert first.partition is None  # where its key goes, as every goal stream's events
    assert first.value == batch[0].state
    assert dict(first.headers) == {
        "okr-event-id": str(goal.event_id).encode(),
        "okr-event-type": b"kpi.defined",
        "okr-position": b"1",
    }
    readings = records[1:]
    assert all(r.topic == "okr.kpi-readings.v1" and r.key is None for r in readings)
    carried = {r.position: [events.decode_dict(d) for d in orjson.loads(r.value)] for r in readings}
    for r in readings:
        assert {partition_of(str(e.kpi_id), 4) for e in carried[r.position]} == {r.partition}
        assert len(carried[r.position]) <= 3
        headers = dict(r.headers)
        assert headers["okr-content"] == b"reading-batch"
        assert headers["okr-position"] == str(r.position).encode()
        assert (
            headers["okr-event-id"]
            == ",".join(str(e.event_id) for e in carried[r.position]).encode()
        )
    # a and b share partition 1: their six readings fill two records, in position order.
    per_partition = {
        part: [e.value for r in readings if r.partition == part for e in carried[r.position]]  # type: ignore[attr-defined]
        for part in (1, 2)
    }
    assert per_partition == {1: [2.0, 3.0, 5.0, 6.0, 7.0, 9.0], 2: [4.0, 8.0]}
    assert [len(carried[r.position]) for r in readings if r.partition == 1] == [3, 3]


def test_watermark_shape() -> None:
    assert orjson.loads(watermark_value(42)) == {"watermark": 42}
    assert dict(watermark_headers(42)) == {"okr-content": b"watermark", "okr-watermark": b"42"}

"""Idempotency keys, token hashing and scopes, the readings fast path, relay records, and
request validation at the HTTP edge (JSON numbers within limits, 4xx never 500)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import events
from contracts.http import (
    CheckInCreate,
    KeyResultCreate,
    KeyResultUpdate,
    KpiCreate,
    KpiUpdate,
    PromoteCreate,
)
from contracts.readings import ReadingIn, derive_reading_id
from services.auth.tokens import TokenStore, hash_token
from services.command import app as command_app
from services.eventstore import StoredNotification
from services.http.app import service_app
from services.http.idempotency import Answer, IdempotencyStore, fingerprint, run_once
from services.http.problems import Problem, install_problem_handlers
from services.http.security import Ingester, Reader, Writer
from services.ingest import app as ingest_app
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
        raise Problem(503, "no")  # transient: a definitive 409 is replayed instead

    with pytest.raises(Problem):
        run_once(keys, "acme", "k", "fp", failing)
    calls, produce = counting()
    assert run_once(keys, "acme", "k", "fp", produce).status == 201
    assert len(calls) == 1


def test_a_pending_key_is_503_then_taken_over_when_stale(keys: IdempotencyStore) -> None:
    assert keys.begin("acme", "k", "fp").retried is False  # type: ignore[union-attr]
    keys.wait_s = 0.2
    with pytest.raises(Problem) as raised:
        keys.begin("acme", "k", "fp")
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "1"}
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
        ("2026-01-02T03:04:05.000001-07:30", 1e15, 'ünï"code'),
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


def test_minus_zero_and_zero_are_one_reading_without_a_reading_id() -> None:
    """A blind retry that writes the value as `0` after `-0.0` (or the other way round)
    derives the same reading id: counted once, in one batch or across requests."""
    kpi = uuid.uuid4()
    facts = {kpi: KpiFacts("acme", False, 1)}
    at = "2026-02-01T11:00:00Z"
    judged = judge("acme", [
        {"kpi_id": str(kpi), "value": -0.0, "observed_at": at},
        {"kpi_id": str(kpi), "value": 0, "observed_at": at},
        {"kpi_id": str(kpi), "value": 0.0, "observed_at": at},
    ], facts.get, NOW)  # fmt: skip
    assert (len(judged.rows), judged.duplicates) == (1, 2)
    assert derive_reading_id(kpi, NOW, -0.0, None) == derive_reading_id(kpi, NOW, 0, None)
    assert derive_reading_id(kpi, NOW, -1e-300, None) != derive_reading_id(kpi, NOW, 0, None)


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


# -- request numbers: JSON numbers within documented limits -------------------------------

PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}
KR = {"title": "k", "kind": "metric", "start": 0, "target": 10}
KPI_BODY = {"name": "k", "direction": "increase", "target": 10, "interval": "day",
            "aggregation": "sum"}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (KeyResultCreate, {**KR, "start": "0"}),
        (KeyResultCreate, {**KR, "target": True}),
        (KeyResultCreate, {**KR, "target": "1e3"}),
        (KeyResultCreate, {**KR, "weight": True}),
        (KeyResultCreate, {**KR, "weight": "2"}),
        (KeyResultUpdate, {"start": False}),
        (KeyResultUpdate, {"weight": "1"}),
        (CheckInCreate, {"value": True}),
        (CheckInCreate, {"value": "5"}),
        (CheckInCreate, {"confidence": True}),
        (CheckInCreate, {"confidence": "0.5"}),
        (PromoteCreate, {"amber": "1"}),
        (KpiCreate, {**KPI_BODY, "target": "10"}),
        (KpiCreate, {**KPI_BODY, "amber": False}),
        (KpiUpdate, {"target": True}),
        (KpiUpdate, {"amber": "9"}),
    ],
)
def test_numbers_must_be_json_numbers(model: type[BaseModel], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="valid number"):
        model.model_validate(body)
    with pytest.raises(ValidationError, match="valid number"):
        model.model_validate_json(orjson.dumps(body))


@pytest.mark.parametrize(
    ("model", "body", "problem"),
    [
        (KeyResultCreate, {"title": "k", "kind": "milestone", "weight": 1e308}, "less than"),
        (KeyResultCreate, {**KR, "weight": 1_000_001}, "less than"),
        (KeyResultCreate, {**KR, "weight": 1e-7}, "greater than"),
        (KeyResultCreate, {**KR, "weight": 0}, "greater than"),
        (KeyResultCreate, {**KR, "start": -1.7e308, "target": 1.7e308}, "between -1e15 and 1e15"),
        (KeyResultCreate, {**KR, "target": 10**15 + 1}, "between -1e15 and 1e15"),
        (KeyResultCreate, {**KR, "target": 5e-324}, "0 or at least 1e-12 in magnitude"),
        (KeyResultCreate, {**KR, "start": -1e-13}, "0 or at least 1e-12 in magnitude"),
        (KeyResultUpdate, {"weight": 2e6}, "less than"),
        (KeyResultUpdate, {"target": 1e16}, "between -1e15 and 1e15"),
        (KeyResultUpdate, {"start": 1e-300}, "0 or at least 1e-12 in magnitude"),
        (CheckInCreate, {"value": -1e16}, "between -1e15 and 1e15"),
        (PromoteCreate, {"amber": 1.2e15}, "between -1.1e15 and 1.1e15"),
        (KpiCreate, {**KPI_BODY, "target": 1.7e308}, "between -1e15 and 1e15"),
        (KpiCreate, {**KPI_BODY, "target": -1e15, "amber": -1.2e15}, "between -1.1e15 and 1.1e15"),
        (KpiUpdate, {"target": -2e15}, "between -1e15 and 1e15"),
        (KpiUpdate, {"amber": 2e15}, "between -1.1e15 and 1.1e15"),
    ],
)
def test_numbers_beyond_the_limits_are_refused(
    model: type[BaseModel], body: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        model.model_validate(body)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (KeyResultCreate, {**KR, "start": -1e15, "target": 10**15, "weight": 1e6}),
        (KeyResultCreate, {**KR, "start": 1e-12, "weight": 1e-6}),
        (KeyResultCreate, {**KR, "start": -0.0}),
        (CheckInCreate, {"value": 1e-300, "confidence": 1}),
        (KpiCreate, {**KPI_BODY, "direction": "decrease", "target": 1e15, "amber": 1.1e15}),
        (KpiUpdate, {"target": -1e15, "amber": -1.1e15}),
    ],
)
def test_numbers_at_the_limits_are_accepted(model: type[BaseModel], body: dict[str, Any]) -> None:
    parsed = model.model_validate(body)
    for name, given_value in body.items():
        if isinstance(given_value, int | float):
            value = getattr(parsed, name)
            assert type(value) is float
            assert value == given_value


JSON_SCALARS = st.one_of(
    st.floats(),
    st.floats(min_value=-2e15, max_value=2e15),
    st.integers(),
    st.integers(min_value=-(2 * 10**15), max_value=2 * 10**15),
    st.booleans(),
    st.text(alphabet="0123456789.e-+ ", max_size=6),
    st.none(),
)


def _number_in(value: Any, limit: float) -> bool:
    return type(value) in (int, float) and -limit <= value <= limit


@settings(max_examples=500, deadline=None)
@given(value=JSON_SCALARS)
def test_number_fields_take_exactly_the_bounded_json_numbers(value: Any) -> None:
    """Strict and bounded, in every model: a JSON number within the limit is taken as that
    float; anything else (booleans, numeric strings, huge or non-finite numbers) is a
    validation error, never another exception."""
    reading = {"kpi_id": str(uuid.uuid4()), "value": value, "observed_at": "2026-01-02T00:00:00Z"}
    cases: list[tuple[Any, str, dict[str, Any], bool]] = [
        (ReadingIn, "value", reading, _number_in(value, 1e15)),
        (CheckInCreate, "value", {"value": value}, value is None or _number_in(value, 1e15)),
        (KpiCreate, "target", {**KPI_BODY, "target": value}, _number_in(value, 1e15)),
        (KpiUpdate, "amber", {"name": "n", "amber": value},
         value is None or _number_in(value, 1.1e15)),
        (KeyResultUpdate, "target", {"title": "t", "target": value}, value is None or (
            _number_in(value, 1e15) and (value == 0 or abs(value) >= 1e-12))),
        (KeyResultUpdate, "weight", {"title": "t", "weight": value}, value is None or (
            _number_in(value, 1e6) and value >= 1e-6)),
    ]  # fmt: skip
    for model, name, body, valid in cases:
        try:
            parsed = model.model_validate(body)
        except ValidationError:
            assert not valid, (model, body)
            continue
        assert valid, (model, body)
        if value is not None:
            assert type(getattr(parsed, name)) is float
            assert getattr(parsed, name) == value


# -- the HTTP edge: bad input is a 4xx and takes nothing already accepted with it ---------


@pytest.fixture
def front(tmp_path: Path) -> Any:
    app = service_app(Settings(data_dir=tmp_path), "t", [command_app.install, ingest_app.install])
    token = app.state.tokens.create("acme", ["read", "write", "ingest"])
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield app, client


def problem(answer: Any, status: int = 422) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


def test_out_of_range_input_is_a_422_not_a_500(front: Any) -> None:
    app, client = front
    objective = {"title": "T", "owner": "o", "level": "team", "period": PERIOD}
    for when in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        body = problem(client.post("/v1/objectives", json={**objective, "occurred_at": when}))
        assert body["errors"][0]["loc"] == ["body", "occurred_at"]
    far = {"start": "9999-12-31", "end": "9999-12-31"}
    body = problem(client.post("/v1/objectives", json={**objective, "period": far}))
    assert {tuple(e["loc"]) for e in body["errors"]} == {
        ("body", "period", "start"), ("body", "period", "end")
    }  # fmt: skip
    oid = client.post("/v1/objectives", json=objective).json()["id"]
    kr_path = f"/v1/objectives/{oid}/key-results"
    problem(client.post(kr_path, json={"title": "k", "kind": "milestone", "weight": 1e308}))
    problem(client.post(kr_path, json={**KR, "start": -1.7e308, "target": 1.7e308}))
    problem(client.post(kr_path, json={**KR, "start": "0", "target": True}))
    problem(client.post("/v1/kpis", json={**KPI_BODY, "target": "10"}))
    stream = app.state.event_store.read_stream(uuid.UUID(oid))
    assert [e.type for e in stream] == ["objective.drafted"]


def test_a_bad_reading_is_rejected_and_the_valid_ones_are_stored(front: Any) -> None:
    _, client = front
    kpi = client.post("/v1/kpis", json=KPI_BODY).json()["id"]
    ok = {"kpi_id": kpi, "value": 1, "observed_at": "2026-01-01T00:00:00Z"}
    readings = [
        ok,
        {**ok, "value": 2, "observed_at": "0001-01-01T00:00:00+01:00"},
        {**ok, "value": True},
        {**ok, "value": "5"},
        {**ok, "value": 1e16},
    ]
    answer = client.post("/v1/readings", json={"readings": readings})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
    assert "observed_at" in body["rejected"][0]["error"]
    # The valid reading is stored: sent again, it is a duplicate.
    again = client.post("/v1/readings", json={"readings": [ok]}).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)


def test_the_default_amber_of_a_negative_target_can_be_given_back(front: Any) -> None:
    app, client = front
    answer = client.post("/v1/kpis", json={**KPI_BODY, "target": -100})
    assert answer.status_code == 201, answer.text
    kpi = answer.json()["id"]
    [defined] = app.state.event_store.read_stream(uuid.UUID(kpi))
    assert defined.amber == -110.0  # below the target of an increasing KPI, not -90
    answer = client.patch(f"/v1/kpis/{kpi}", json={"amber": defined.amber})
    assert answer.status_code == 200, answer.text


def test_a_kpi_patch_of_nulls_says_null_changes_nothing() -> None:
    """{"amber": null} was told to "give at least one of … amber …": it had."""
    with pytest.raises(ValidationError, match="amber: null changes nothing"):
        KpiUpdate.model_validate({"amber": None})
    with pytest.raises(ValidationError, match="give at least one of"):
        KpiUpdate.model_validate({"reason": "r"})
    assert KpiUpdate.model_validate({"amber": None, "target": 5}).target == 5

"""Every datetime the API takes is RFC 3339 date-time text, every period date `YYYY-MM-DD`
text (README, "Input limits"): command `occurred_at`, reading `observed_at` (HTTP batches
and readings produced straight to Kafka), the read API's `as_of`, `known_at`, `from`, `to`.
pydantic's lax parsing would also read a Unix time in a string, a time without seconds, a
`+0000` offset, a space for the `T`, and a date-time as a date. And DELETE of a key result
takes an optional body with `occurred_at`, unknown fields refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from contracts.http import (
    CheckInCreate,
    KeyResultRemove,
    KpiRetire,
    ObjectiveClose,
    ObjectiveCreate,
    ObjectiveTransition,
    ObjectiveUpdate,
)
from contracts.readings import KafkaReading, ReadingIn
from services.command import app as command_app
from services.http.app import service_app
from services.ingest import app as ingest_app
from services.ingest.kpis import KpiFacts
from services.ingest.readings import judge
from services.processor.records import direct_reading
from services.query import app as query_app
from services.settings import Settings

NOW = datetime(2026, 2, 1, 12, tzinfo=UTC)
KPI = "0b6f3a4e-8f5e-4b0e-9d7c-2f1f3d6c9a10"
PERIOD = {"start": "2026-01-01", "end": "2026-12-31"}
OBJECTIVE = {"title": "T", "owner": "o", "level": "team", "period": PERIOD}

NOT_RFC3339 = [
    "1764565200",  # a Unix time in a string
    "1764565200.5",
    "-1",
    "2026-11-20T10:00Z",  # no seconds
    "2026-11-20T10:00+01:00",
    "2026-11-20T10:00:00+0000",  # no colon in the offset
    "2026-11-20T10:00:00+00",
    "2026-11-20 10:00:00Z",  # a space for the T
    "2026-11-20_10:00:00Z",
    "20261120T100000Z",  # ISO 8601 basic format
    "2026-11-20",  # a date alone
    "2026-11-20T10:00:00",  # naive
    "2026-11-20T10:00:00Z\n",
    " 2026-11-20T10:00:00Z",
    "2026-11-20T10:00:00.Z",
    "2026-11-20T10:00:00 Z",
    "2026-11-20T10:00:00UTC",
    "２０２６-11-20T10:00:00Z",  # non-ASCII digits
    "",
    "now",
]
RFC3339 = {
    "2026-01-05T00:00:00Z": datetime(2026, 1, 5, tzinfo=UTC),
    "2026-01-05t00:00:00z": datetime(2026, 1, 5, tzinfo=UTC),
    "2026-01-05T00:00:00.123456+02:00": datetime(2026, 1, 4, 22, 0, 0, 123456, tzinfo=UTC),
    "2026-01-05T00:00:00.5-07:30": datetime(2026, 1, 5, 7, 30, 0, 500000, tzinfo=UTC),
    "2026-01-05T00:00:00-00:00": datetime(2026, 1, 5, tzinfo=UTC),
    "2026-01-05T00:00:00.123456789Z": datetime(2026, 1, 5, 0, 0, 0, 123456, tzinfo=UTC),
}


def reading(observed_at: object) -> dict[str, Any]:
    return {"kpi_id": KPI, "value": 1, "observed_at": observed_at}


# -- the contracts ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_RFC3339)
def test_datetimes_that_are_not_rfc3339_text_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="RFC 3339") as caught:
        ReadingIn.model_validate(reading(bad))
    assert [e["loc"] for e in caught.value.errors()] == [("observed_at",)]
    with pytest.raises(ValidationError, match="RFC 3339"):
        KafkaReading.model_validate_json(orjson.dumps({**reading(bad), "org_id": "acme"}))
    for model, body in (
        (ObjectiveCreate, OBJECTIVE),
        (ObjectiveUpdate, {"title": "t"}),
        (ObjectiveClose, {}),
        (ObjectiveTransition, {}),
        (KeyResultRemove, {}),
        (CheckInCreate, {"done": True}),
        (KpiRetire, {}),
    ):
        with pytest.raises(ValidationError, match="RFC 3339") as caught:
            model.model_validate({**body, "occurred_at": bad})
        assert [e["loc"] for e in caught.value.errors()] == [("occurred_at",)], model


@pytest.mark.parametrize("good", list(RFC3339))
def test_rfc3339_datetimes_are_taken_in_utc(good: str) -> None:
    assert ReadingIn.model_validate(reading(good)).observed_at == RFC3339[good]
    kafka = KafkaReading.model_validate_json(orjson.dumps({**reading(good), "org_id": "a"}))
    assert kafka.observed_at == RFC3339[good]
    created = ObjectiveCreate.model_validate({**OBJECTIVE, "occurred_at": good})
    assert created.occurred_at == RFC3339[good]
    assert KeyResultRemove.model_validate({"occurred_at": good}).occurred_at == RFC3339[good]


def test_datetime_objects_from_python_callers_are_still_taken() -> None:
    at = datetime(2026, 1, 5, 1, tzinfo=UTC)
    assert ReadingIn(kpi_id=uuid.UUID(KPI), value=1.0, observed_at=at).observed_at == at


@pytest.mark.parametrize(
    "bad",
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01 00:00", "1767225600",
     "20260101", "2026-1-1", "2026-01-01Z", "２０２６-01-01", 1_767_225_600, True, None],
)  # fmt: skip
def test_period_dates_are_yyyy_mm_dd_text_only(bad: object) -> None:
    for period in ({**PERIOD, "start": bad}, {**PERIOD, "end": bad}):
        with pytest.raises(ValidationError) as caught:
            ObjectiveCreate.model_validate({**OBJECTIVE, "period": period})
        assert all(e["loc"][0] == "period" for e in caught.value.errors())
        with pytest.raises(ValidationError):
            ObjectiveUpdate.model_validate({"period": period})


def test_key_result_remove_takes_only_occurred_at() -> None:
    assert KeyResultRemove.model_validate({}).occurred_at is None
    with pytest.raises(ValidationError, match="Extra inputs"):
        KeyResultRemove.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        KeyResultRemove.model_validate({"reason": "r"})  # key_result.removed has none


# -- readings: HTTP ingest (fast path and pydantic path) and straight to Kafka ---------------


def test_a_reading_with_a_non_rfc3339_observed_at_is_rejected_alone() -> None:
    kpi = uuid.UUID(KPI)
    items = [reading(t) for t in NOT_RFC3339] + [reading(t) for t in RFC3339]
    judged = judge("acme", items, {kpi: KpiFacts("acme", False, 1)}.get, NOW)
    assert [r["index"] for r in judged.rejected] == list(range(len(NOT_RFC3339)))
    assert all("observed_at" in r["error"] for r in judged.rejected), judged.rejected
    assert all("RFC 3339" in r["error"] for r in judged.rejected), judged.rejected
    # The two spellings of 2026-01-05T00:00:00Z are one derived reading.
    assert len(judged.rows) + judged.duplicates == len(RFC3339)
    assert judged.duplicates == 2


@pytest.mark.parametrize("bad", ["1764565201", "2026-01-31T10:00Z", "2026-01-31T10:00:00+0000"])
def test_a_direct_kafka_reading_with_a_non_rfc3339_observed_at_is_a_dead_letter(bad: str) -> None:
    value = orjson.dumps({**reading(bad), "org_id": "acme"})
    with pytest.raises(ValueError, match=r"observed_at.*RFC 3339"):
        direct_reading(value, NOW, lambda _kpi: ("acme", "active"))
    good = orjson.dumps({**reading("2026-01-31t10:00:00z"), "org_id": "acme"})
    row = direct_reading(good, NOW, lambda _kpi: ("acme", "active"))
    assert row.observed_at == "2026-01-31T10:00:00.000000Z"


# -- the HTTP edge ------------------------------------------------------------------------


@pytest.fixture
def front(tmp_path: Path) -> Any:
    installs = [command_app.install, ingest_app.install, query_app.install]
    app = service_app(Settings(data_dir=tmp_path), "t", installs)
    token = app.state.tokens.create("acme", ["read", "write", "ingest"])
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield app, client


def problem_at(answer: Any, loc: list[str]) -> str:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    errors = answer.json()["errors"]
    assert [e["loc"] for e in errors] == [loc], answer.text
    msg: str = errors[0]["msg"]
    return msg


def test_commands_refuse_non_rfc3339_occurred_at_and_period_date_times(front: Any) -> None:
    _, client = front
    for bad in ("1764565200", "2026-11-20T10:00Z", "2026-01-05T00:00:00+0000"):
        answer = client.post("/v1/objectives", json={**OBJECTIVE, "occurred_at": bad})
        assert "RFC 3339" in problem_at(answer, ["body", "occurred_at"])
    period = {"start": "2026-01-01T00:00:00Z", "end": "2026-12-31"}
    answer = client.post("/v1/objectives", json={**OBJECTIVE, "period": period})
    assert "YYYY-MM-DD" in problem_at(answer, ["body", "period", "start"])
    for good in (
        "2026-01-05T00:00:00Z",
        "2026-01-05T00:00:00.123456+02:00",
        "2026-01-05t00:00:00z",
    ):
        answer = client.post("/v1/objectives", json={**OBJECTIVE, "occurred_at": good})
        assert answer.status_code == 201, answer.text


def test_readings_with_non_rfc3339_observed_at_are_rejected_one_by_one(front: Any) -> None:
    _, client = front
    kpi = client.post(
        "/v1/kpis",
        json={"name": "n", "direction": "increase", "target": 5, "interval": "day",
              "aggregation": "sum"},
    ).json()["id"]  # fmt: skip
    items = [
        {"kpi_id": kpi, "value": 1, "observed_at": "2026-01-05T00:00:00Z"},
        {"kpi_id": kpi, "value": 2, "observed_at": "1764565201"},
        {"kpi_id": kpi, "value": 3, "observed_at": "2026-01-05T00:00Z"},
        {"kpi_id": kpi, "value": 4, "observed_at": "2026-01-05T00:00:00.5+02:00"},
    ]
    answer = client.post("/v1/readings", json={"readings": items})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert all(r["error"].startswith("observed_at:") for r in body["rejected"]), body


def test_delete_of_a_key_result_takes_an_optional_occurred_at(front: Any) -> None:
    app, client = front
    oid = client.post("/v1/objectives", json=OBJECTIVE).json()["id"]
    path = f"/v1/objectives/{oid}/key-results"
    milestone = {"title": "k", "kind": "milestone"}
    krs = [client.post(path, json=milestone).json()["id"] for _ in range(3)]
    problem_at(client.request("DELETE", f"{path}/{krs[0]}", json={"bogus": 1}), ["body", "bogus"])
    bad = client.request("DELETE", f"{path}/{krs[0]}", json={"occurred_at": "1764565200"})
    problem_at(bad, ["body", "occurred_at"])
    stream = app.state.event_store.read_stream(uuid.UUID(oid))
    assert [e.type for e in stream].count("key_result.removed") == 0
    backdated = "2026-01-05T00:00:00+01:00"
    answer = client.request("DELETE", f"{path}/{krs[0]}", json={"occurred_at": backdated})
    assert answer.status_code == 200, answer.text
    assert client.request("DELETE", f"{path}/{krs[1]}").status_code == 200  # no body
    assert client.request("DELETE", f"{path}/{krs[2]}", json={}).status_code == 200
    removed = [
        e for e in app.state.event_store.read_stream(uuid.UUID(oid))
        if e.type == "key_result.removed"
    ]  # fmt: skip
    assert [str(e.kr_id) for e in removed] == krs
    assert removed[0].occurred_at == datetime(2026, 1, 4, 23, tzinfo=UTC)
    assert removed[1].occurred_at > datetime(2026, 1, 5, tzinfo=UTC)  # now


@pytest.mark.parametrize("bad", ["1764565200", "2026-11-20T10:00Z", "2026-11-20T10:00:00+0000"])
def test_read_instants_must_be_rfc3339_text(front: Any, bad: str) -> None:
    _, client = front
    objective, kpi = f"/v1/objectives/{uuid.uuid4()}", f"/v1/kpis/{uuid.uuid4()}"
    for path, name in (
        (objective, "as_of"),
        (objective, "known_at"),
        (f"{objective}/history", "from"),
        (f"{objective}/history", "to"),
        (kpi, "as_of"),
        (f"{kpi}/series", "from"),
        (f"{kpi}/series", "to"),
    ):
        msg = problem_at(client.get(path, params={name: bad}), ["query", name])
        assert "RFC 3339" in msg
        # RFC 3339 text gets past validation (404: no such resource).
        for good in ("2026-01-05T00:00:00Z", "2026-01-05t00:00:00.123456+02:00"):
            assert client.get(path, params={name: good}).status_code == 404, (path, name)

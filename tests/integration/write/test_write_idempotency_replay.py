"""Idempotency-Key over HTTP against the real stores (SQLite and PostgreSQL): definitive
error answers are replayed, transient ones are not, and concurrent repeats wait for the
first answer instead of a 409."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.command import app as command_app
from services.command.service import CommandService
from services.eventstore import EventStore, StoreUnavailableError
from services.http.app import service_app
from services.http.idempotency import IdempotencyStore
from services.ingest import app as ingest_app
from services.settings import Settings

pytestmark = pytest.mark.integration

PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}
OBJECTIVE = {"title": "O", "owner": "a", "level": "team", "period": PERIOD}


class Api:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        extra = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.client.post(path, json=body, headers={**self.auth, **extra})


@pytest.fixture
def app_and_api(settings: Settings) -> Iterator[tuple[Any, Api]]:
    app = service_app(settings, "writes", [command_app.install, ingest_app.install])
    token = app.state.tokens.create("acme", ["write", "ingest"])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, Api(client, token)


def stream_length(app: Any, resource_id: str) -> int:
    store: EventStore = app.state.event_store
    return len(store.read_stream(uuid.UUID(resource_id)))


def assert_same_problem(first: httpx.Response, again: httpx.Response, status: int) -> None:
    for answer in (first, again):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert again.json() == first.json()
    assert again.json()["status"] == status


def together(n: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """`n` threads started at once, each making `call`: their answers."""
    barrier = threading.Barrier(n)
    answers: list[httpx.Response | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def slowed(
    monkeypatch: pytest.MonkeyPatch, name: str, delay_s: float, fail_first: bool = False
) -> list[int]:
    """Make CommandService.`name` take `delay_s` (so repeats overlap it); with `fail_first`
    its first call then fails as if the event store were unavailable. Returns its calls."""
    real = getattr(CommandService, name)
    calls: list[int] = []
    lock = threading.Lock()

    def slow(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        time.sleep(delay_s)
        if fail_first and first:
            raise StoreUnavailableError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(CommandService, name, slow)
    return calls


def test_a_409_is_replayed_for_its_key_and_appends_nothing_later(
    app_and_api: tuple[Any, Api],
) -> None:
    app, api = app_and_api
    oid = api.post("/v1/objectives", OBJECTIVE).json()["id"]
    first = api.post(f"/v1/objectives/{oid}/reopen", Idempotency_Key="ik-409")
    assert first.status_code == 409, first.text
    closed = api.post(f"/v1/objectives/{oid}/close")
    assert closed.status_code == 200, closed.text
    length = stream_length(app, oid)
    # Reopening would now succeed: the same request with the same key is the first answer.
    again = api.post(f"/v1/objectives/{oid}/reopen", Idempotency_Key="ik-409")
    assert_same_problem(first, again, 409)
    assert stream_length(app, oid) == length, "the replay appended nothing"
    # The same key with another request is still 422; a new key runs.
    other = api.post(f"/v1/objectives/{oid}/close", Idempotency_Key="ik-409")
    assert other.status_code == 422, other.text
    fresh = api.post(f"/v1/objectives/{oid}/reopen", Idempotency_Key="ik-other")
    assert fresh.status_code == 200, fresh.text
    assert stream_length(app, oid) == length + 1


def test_a_412_releases_the_key_for_the_retry_with_a_fresh_if_match(
    app_and_api: tuple[Any, Api],
) -> None:
    """The fingerprint does not cover If-Match: a stored 412 would answer the corrected
    retry (same key, same body, the ETag just read) for a day."""
    app, api = app_and_api
    oid = api.post("/v1/objectives", OBJECTIVE).json()["id"]
    api.post(f"/v1/objectives/{oid}/key-results", {"title": "m", "kind": "milestone"})
    stale = api.post(f"/v1/objectives/{oid}/close", If_Match='"1"', Idempotency_Key="ik-412")
    assert stale.status_code == 412, stale.text
    assert stale.headers["etag"] == '"2"'
    length = stream_length(app, oid)
    fresh = api.post(f"/v1/objectives/{oid}/close", If_Match='"2"', Idempotency_Key="ik-412")
    assert fresh.status_code == 200, fresh.text
    assert stream_length(app, oid) == length + 1
    again = api.post(f"/v1/objectives/{oid}/close", If_Match='"2"', Idempotency_Key="ik-412")
    assert (again.status_code, again.json()) == (200, fresh.json()), "the success is replayed"
    assert stream_length(app, oid) == length + 1


def test_a_transient_failure_releases_the_key(
    app_and_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = app_and_api
    calls = slowed(monkeypatch, "create_objective", 0.0, fail_first=True)
    failed = api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-503")
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"] == "1"
    retried = api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-503")
    assert retried.status_code == 201, retried.text
    assert len(calls) == 2, "the retry ran again"
    replayed = api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-503")
    assert replayed.json() == retried.json()
    assert stream_length(app, retried.json()["id"]) == 1


def test_concurrent_identical_requests_all_get_the_first_answer(
    app_and_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = app_and_api
    calls = slowed(monkeypatch, "create_objective", 0.5)
    answers = together(10, lambda: api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-c"))
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    bodies = {a.text for a in answers}
    assert len(bodies) == 1, bodies
    assert {a.headers["location"] for a in answers} == {answers[0].headers["location"]}
    assert len(calls) == 1, "the command ran once"
    assert stream_length(app, answers[0].json()["id"]) == 1, "exactly one event appended"


def test_concurrent_identical_readings_batches_count_once(
    app_and_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api = app_and_api
    kpi = api.post("/v1/kpis", {"name": "K", "direction": "increase", "target": 5.0,
                               "interval": "day", "aggregation": "sum"}).json()["id"]  # fmt: skip
    readings = {"readings": [{"kpi_id": kpi, "value": 3, "observed_at": "2026-01-05T00:00:00Z"}]}
    service = app_and_api[0].state.readings
    real_accept = service.accept

    def slow_accept(*args: Any) -> Any:
        time.sleep(0.5)
        return real_accept(*args)

    monkeypatch.setattr(service, "accept", slow_accept)
    answers = together(8, lambda: api.post("/v1/readings", readings, Idempotency_Key="ik-r"))
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    assert {a.text for a in answers} == {answers[0].text}
    assert (answers[0].json()["accepted"], answers[0].json()["duplicates"]) == (1, 0)


def test_a_waiting_repeat_takes_over_when_the_first_fails_transiently(
    app_and_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = app_and_api
    calls = slowed(monkeypatch, "create_objective", 0.5, fail_first=True)
    answers = together(2, lambda: api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-t"))
    assert sorted(a.status_code for a in answers) == [201, 503], [a.text for a in answers]
    assert len(calls) == 2
    created = next(a for a in answers if a.status_code == 201)
    assert stream_length(app, created.json()["id"]) == 1
    again = api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-t")
    assert again.json() == created.json()


def test_a_repeat_still_in_progress_after_the_wait_is_503_not_409(
    app_and_api: tuple[Any, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = app_and_api
    keys: IdempotencyStore = app.state.idempotency
    keys.wait_s = 0.3
    calls = slowed(monkeypatch, "create_objective", 1.5)
    answers = together(2, lambda: api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-w"))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 503], [a.text for a in answers]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["content-type"].startswith("application/problem+json")
    assert len(calls) == 1
    created = next(a for a in answers if a.status_code == 201)
    assert api.post("/v1/objectives", OBJECTIVE, Idempotency_Key="ik-w").json() == created.json()

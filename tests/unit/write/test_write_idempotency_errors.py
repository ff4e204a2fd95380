"""run_once: which failures are replayed for their key, which release it, and how a repeat
waits for a request still in progress."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from services.http.idempotency import Answer, Begun, IdempotencyStore, run_once
from services.http.problems import Problem, problem_response
from services.projectionstore.db import Database


@pytest.fixture
def keys(tmp_path: Path) -> IdempotencyStore:
    store = IdempotencyStore(Database("sqlite", path=tmp_path / "i.sqlite"))
    store.wait_s = 2.0
    return store


def ok(_retried: bool) -> Answer:
    return Answer(201, {"ok": True})


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 428])
def test_a_definitive_client_error_is_replayed_as_the_same_problem(
    keys: IdempotencyStore, status: int
) -> None:
    calls: list[int] = []

    def refuse(_retried: bool) -> Answer:
        calls.append(1)
        raise Problem(
            status, "no", errors=[{"loc": ["body"], "msg": "no"}], headers={"ETag": '"2"'}
        )

    with pytest.raises(Problem) as first:
        run_once(keys, "acme", "k", "fp", refuse)
    with pytest.raises(Problem) as again:
        run_once(keys, "acme", "k", "fp", ok)
    assert len(calls) == 1
    rendered = [
        problem_response(p.status, p.detail, title=p.title, errors=p.errors, headers=p.headers)
        for p in (first.value, again.value)
    ]
    assert rendered[1].status_code == status
    assert orjson.loads(bytes(rendered[1].body)) == orjson.loads(bytes(rendered[0].body))
    assert rendered[1].headers["etag"] == '"2"'
    assert rendered[1].media_type == "application/problem+json"


@pytest.mark.parametrize(
    "failure",
    [
        Problem(503, "busy"),
        Problem(429, "slow down"),
        Problem(401, "who"),
        Problem(403, "no"),
        Problem(500, "oops"),
        RuntimeError("crash"),
    ],
)
def test_a_transient_failure_releases_the_key(
    keys: IdempotencyStore, failure: BaseException
) -> None:
    def failing(_retried: bool) -> Answer:
        raise failure

    with pytest.raises(type(failure)):
        run_once(keys, "acme", "k", "fp", failing)
    assert run_once(keys, "acme", "k", "fp", ok).status == 201


def test_a_repeat_waits_for_the_first_answer(keys: IdempotencyStore) -> None:
    assert isinstance(keys.begin("acme", "k", "fp"), Begun)
    threading.Timer(0.3, keys.complete, ("acme", "k", Answer(201, {"n": 1}))).start()
    started = time.monotonic()
    assert keys.begin("acme", "k", "fp") == Answer(201, {"n": 1}, {})
    assert 0.2 < time.monotonic() - started < 1.5


def test_a_repeat_takes_over_a_key_released_while_it_waits(keys: IdempotencyStore) -> None:
    assert isinstance(keys.begin("acme", "k", "fp"), Begun)
    threading.Timer(0.3, keys.abandon, ("acme", "k")).start()
    assert keys.begin("acme", "k", "fp") == Begun(retried=False)


def test_a_repeat_still_in_progress_after_the_wait_is_503(keys: IdempotencyStore) -> None:
    keys.wait_s = 0.3
    assert isinstance(keys.begin("acme", "k", "fp"), Begun)
    started = time.monotonic()
    with pytest.raises(Problem) as raised:
        keys.begin("acme", "k", "fp")
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "1"}
    assert time.monotonic() - started >= 0.3


def test_another_request_waiting_on_the_key_is_still_422(keys: IdempotencyStore) -> None:
    assert isinstance(keys.begin("acme", "k", "fp"), Begun)
    with pytest.raises(Problem) as raised:
        keys.begin("acme", "k", "other")
    assert raised.value.status == 422

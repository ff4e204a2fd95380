"""Every goal command and the readings route over real HTTP against `okrstream up`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from services.auth.tokens import TokenStore
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

PERIOD = {"start": "2026-01-01", "end": "2026-12-31"}


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> Iterator[TokenStore]:
    store = TokenStore.from_settings(stack.settings)
    yield store
    store.close()


class Api:
    def __init__(self, base: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=base, headers=headers, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def api(stack: Stack, tokens: TokenStore, org: str, scopes: str = "read,write,ingest") -> Api:
    return Api(stack.url, tokens.create(org, scopes.split(",")))


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def objective_body(**extra: Any) -> dict[str, Any]:
    return {"title": "t", "owner": "o", "level": "team", "period": PERIOD, **extra}


def new_objective(a: Api, **extra: Any) -> dict[str, Any]:
    body = {"title": "Grow", "owner": "ana", "level": "team", "period": PERIOD, **extra}
    answer = a.post("/v1/objectives", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"/v1/objectives/{created['id']}"
    assert answer.headers["etag"] == '"1"'
    assert created["version"] == 1
    assert created["position"] >= 1
    return created


def new_kpi(a: Api, **extra: Any) -> dict[str, Any]:
    body = {"name": "NPS", "direction": "increase", "target": 50, "interval": "week",
            "aggregation": "avg", **extra}  # fmt: skip
    answer = a.post("/v1/kpis", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"].startswith("/v1/kpis/")
    result: dict[str, Any] = answer.json()
    return result


def test_objective_lifecycle_with_key_results(stack: Stack, tokens: TokenStore) -> None:
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    parent = new_objective(a, level="company")
    child = new_objective(a, parent_id=parent["id"])
    oid = child["id"]
    patched = a.patch(f"/v1/objectives/{oid}", json={"title": "Grow more", "owner": "bo"})
    assert patched.status_code == 200
    assert patched.json()["version"] == 2
    assert patched.json()["position"] > child["position"]
    kr = a.post(f"/v1/objectives/{oid}/key-results",
                json={"title": "Revenue", "kind": "metric", "start": 0, "target": 100})  # fmt: skip
    assert kr.status_code == 201
    kr_id = kr.json()["id"]
    assert kr.json()["version"] == 3
    ms = a.post(f"/v1/objectives/{oid}/key-results", json={"title": "Ship", "kind": "milestone"})
    ms_id = ms.json()["id"]
    checked = a.post(f"/v1/objectives/{oid}/key-results/{kr_id}/check-ins",
                     json={"value": 40, "confidence": 0.7, "note": "ok",
                           "occurred_at": "2026-02-01T00:00:00Z"})  # fmt: skip
    assert checked.status_code == 201
    assert set(checked.json()) == {"version", "position"}
    done = a.post(f"/v1/objectives/{oid}/key-results/{ms_id}/check-ins", json={"done": True})
    assert done.status_code == 201
    problem(a.post(f"/v1/objectives/{oid}/key-results/{ms_id}/check-ins", json={"value": 1}), 409)
    problem(a.post(f"/v1/objectives/{oid}/key-results/{kr_id}/check-ins", json={"done": True}), 409)
    updated = a.patch(f"/v1/objectives/{oid}/key-results/{kr_id}",
                      json={"target": 120, "weight": 2, "reason": "stretch"})  # fmt: skip
    assert updated.status_code == 200
    removed = a.delete(f"/v1/objectives/{oid}/key-results/{ms_id}")
    assert removed.status_code == 200
    problem(a.delete(f"/v1/objectives/{oid}/key-results/{ms_id}"), 404)
    closed = a.post(f"/v1/objectives/{oid}/close", json={"note": "done"})
    assert closed.status_code == 200
    problem(a.post(f"/v1/objectives/{oid}/close"), 409)
    assert a.post(f"/v1/objectives/{oid}/reopen").status_code == 200
    assert a.post(f"/v1/objectives/{oid}/archive").status_code == 200
    problem(a.patch(f"/v1/objectives/{oid}", json={"title": "x"}), 409)
    problem(a.post(f"/v1/objectives/{oid}/reopen"), 409)
    # A cycle: the parent cannot become the child's child.
    problem(a.patch(f"/v1/objectives/{parent['id']}", json={"parent_id": oid}), 409)


def test_kpis_promote_and_links(stack: Stack, tokens: TokenStore) -> None:
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    kpi = new_kpi(a)
    oid = new_objective(a)["id"]
    linked = a.post(f"/v1/objectives/{oid}/key-results",
                    json={"title": "NPS up", "kind": "metric", "start": 10, "target": 50,
                          "kpi_id": kpi["id"]})  # fmt: skip
    assert linked.status_code == 201
    revised = a.patch(f"/v1/kpis/{kpi['id']}", json={"name": "Net promoter", "target": 60})
    assert revised.status_code == 200
    assert revised.json()["version"] == 3  # revised + retargeted
    assert a.post(f"/v1/kpis/{kpi['id']}/retire", json={"reason": "old"}).status_code == 200
    problem(a.post(f"/v1/kpis/{kpi['id']}/retire"), 409)
    problem(
        a.post(f"/v1/objectives/{oid}/key-results",
               json={"title": "x", "kind": "metric", "start": 0, "target": 1,
                     "kpi_id": kpi["id"]}),
        409,
    )  # fmt: skip
    kr = a.post(f"/v1/objectives/{oid}/key-results",
                json={"title": "Uptime", "kind": "maintain", "target": 99.9,
                      "comparison": "at_least"})  # fmt: skip
    promoted = a.post(f"/v1/objectives/{oid}/key-results/{kr.json()['id']}/promote",
                      json={"interval": "day"})  # fmt: skip
    assert promoted.status_code == 201, promoted.text
    assert set(promoted.json()) == {"kpi_id", "position"}
    new_kpi_id = promoted.json()["kpi_id"]
    reading = {"kpi_id": new_kpi_id, "value": 99.95, "observed_at": "2026-03-01T00:00:00Z"}
    accepted = a.post("/v1/readings", json={"readings": [reading]})
    assert accepted.status_code == 202
    assert accepted.json()["accepted"] == 1


def test_auth_and_tenancy(stack: Stack, tokens: TokenStore) -> None:
    mine = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    theirs = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    oid = new_objective(mine)["id"]
    kpi = new_kpi(mine)["id"]
    problem(Api(stack.url, None).post("/v1/objectives", json={}), 401)
    problem(Api(stack.url, "okr_unknown").post("/v1/kpis", json={}), 401)
    reader = api(stack, tokens, "someone", "read")
    problem(reader.post("/v1/objectives", json={"title": "x"}), 403)
    problem(reader.post("/v1/readings", json={"readings": []}), 403)
    problem(theirs.patch(f"/v1/objectives/{oid}", json={"title": "mine now"}), 404)
    problem(theirs.post(f"/v1/objectives/{oid}/close"), 404)
    problem(theirs.patch(f"/v1/kpis/{kpi}", json={"name": "x"}), 404)
    problem(theirs.post(f"/v1/objectives/{uuid.uuid4()}/archive"), 404)
    # Another organisation's objective as a parent: 409, like an unknown one.
    problem(theirs.post("/v1/objectives", json=objective_body(parent_id=oid)), 409)
    answer = theirs.post("/v1/readings", json={"readings": [
        {"kpi_id": kpi, "value": 1, "observed_at": "2026-01-01T00:00:00Z"}]})  # fmt: skip
    assert answer.status_code == 202
    assert answer.json()["accepted"] == 0
    assert answer.json()["rejected"][0]["index"] == 0


def test_validation_preconditions_and_limits(stack: Stack, tokens: TokenStore) -> None:
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    oid = new_objective(a)["id"]
    body = problem(a.post("/v1/objectives", json=objective_body(colour="red")), 422)
    assert any(e["loc"][-1] == "colour" for e in body["errors"])
    problem(a.post("/v1/objectives", json={"title": "", "owner": "o", "level": "team",
                                            "period": PERIOD}), 422)  # fmt: skip
    problem(a.post("/v1/objectives", json={"title": "t", "owner": "o", "level": "team",
                                            "period": {"start": "2026-05-01",
                                                       "end": "2026-01-01"}}), 422)  # fmt: skip
    for when in ("2026-01-01T00:00:00", "2999-01-01T00:00:00Z"):  # naive; too far ahead
        problem(a.post("/v1/objectives", json=objective_body(occurred_at=when)), 422)
    problem(a.post(f"/v1/objectives/{oid}/key-results", json={"title": "m", "kind": "metric"}),
            422)  # fmt: skip
    bad_json = a.post("/v1/kpis", content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code in (400, 422)
    stale = a.patch(f"/v1/objectives/{oid}", json={"title": "x"}, headers={"If-Match": '"7"'})
    problem(stale, 412)
    fresh = a.patch(f"/v1/objectives/{oid}", json={"title": "x"}, headers={"If-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == '"2"'
    problem(a.patch(f"/v1/objectives/{oid}", json={"title": "y"}, headers={"If-Match": '"1"'}),
            412)  # fmt: skip
    big = b'{"readings": [' + b'"' + b"x" * (9 * 1024 * 1024) + b'"]}'
    problem(a.post("/v1/readings", content=big, headers={"content-type": "application/json"}),
            413)  # fmt: skip
    many = [{"kpi_id": str(uuid.uuid4()), "value": 1, "observed_at": "2026-01-01T00:00:00Z"}]
    problem(a.post("/v1/readings", json={"readings": many * 10_001}), 413)
    problem(a.post("/v1/readings", json={"readings": [], "extra": 1}), 422)


def test_idempotency_key_replays_and_rejects_other_bodies(stack: Stack, tokens: TokenStore) -> None:
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"title": "Once", "owner": "ana", "level": "team", "period": PERIOD}
    first = a.post("/v1/objectives", json=body, headers=key)
    again = a.post("/v1/objectives", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    problem(a.post("/v1/objectives", json={**body, "title": "Twice"}, headers=key), 422)
    oid = first.json()["id"]
    kr = a.post(f"/v1/objectives/{oid}/key-results", json={"title": "m", "kind": "milestone"})
    path = f"/v1/objectives/{oid}/key-results/{kr.json()['id']}/check-ins"
    ck = {"Idempotency-Key": "check-in-1"}
    one = a.post(path, json={"done": False}, headers=ck)
    two = a.post(path, json={"done": False}, headers=ck)
    assert one.json() == two.json()
    follow = a.patch(f"/v1/objectives/{oid}", json={"title": "v"})
    assert follow.json()["version"] == one.json()["version"] + 1, "the replay appended nothing"
    kpi = new_kpi(a)["id"]
    readings = {"readings": [{"kpi_id": kpi, "value": 3, "observed_at": "2026-01-05T00:00:00Z"}]}
    rk = {"Idempotency-Key": "batch-1"}
    r1 = a.post("/v1/readings", json=readings, headers=rk)
    r2 = a.post("/v1/readings", json=readings, headers=rk)
    assert r1.status_code == r2.status_code == 202
    assert r2.json() == r1.json() == {**r1.json(), "accepted": 1, "duplicates": 0}
    # The same batch serialised anew (key order, whitespace, 3.0 for 3) is the same request.
    resent = (
        '{ "readings": [ {"observed_at": "2026-01-05T00:00:00Z", "value": 3.0,\n'
        f'  "kpi_id": "{kpi}"}} ] }}'
    )
    r3 = a.post("/v1/readings", content=resent, headers={**rk, "Content-Type": "application/json"})
    assert (r3.status_code, r3.json()) == (202, r1.json())
    # And the instant written another way (what JavaScript's toISOString writes).
    js = {"readings": [{**readings["readings"][0], "observed_at": "2026-01-05T00:00:00.000Z"}]}
    r4 = a.post("/v1/readings", json=js, headers=rk)
    assert (r4.status_code, r4.json()) == (202, r1.json())
    other = {"readings": [{**readings["readings"][0], "value": 4}]}
    problem(a.post("/v1/readings", json=other, headers=rk), 422)
    unkeyed = a.post("/v1/readings", json=readings)
    assert (unkeyed.json()["accepted"], unkeyed.json()["duplicates"]) == (0, 1)


def test_idempotency_key_replays_error_answers_and_waits_for_one_in_progress(
    stack: Stack, tokens: TokenStore
) -> None:
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    oid = new_objective(a)["id"]
    reopen, key = f"/v1/objectives/{oid}/reopen", {"Idempotency-Key": "ik-409"}
    first = a.post(reopen, headers=key)
    assert problem(first, 409)
    closed = a.post(f"/v1/objectives/{oid}/close")
    assert closed.status_code == 200, closed.text
    # Reopening would succeed now: the same request with the same key is the first answer.
    again = a.post(reopen, headers=key)
    assert problem(again, 409) == first.json()
    follow = a.post(reopen, headers={"Idempotency-Key": "ik-fresh"})
    assert follow.status_code == 200, follow.text
    assert follow.json()["version"] == closed.json()["version"] + 1, "the replay appended nothing"

    # Identical requests at once: one command, one answer for all of them.
    body = {"title": "Once", "owner": "ana", "level": "team", "period": PERIOD}
    same = {"Idempotency-Key": uuid.uuid4().hex}
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: a.post("/v1/objectives", json=body, headers=same),
                                range(10)))  # fmt: skip
    assert [r.status_code for r in answers] == [201] * 10, [r.text for r in answers]
    assert {r.text for r in answers} == {answers[0].text}
    assert answers[0].json()["version"] == 1
    created = a.patch(f"/v1/objectives/{answers[0].json()['id']}", json={"title": "v"})
    assert created.json()["version"] == 2, "exactly one event was appended"


def test_readings_of_a_kpi_retired_a_moment_ago_are_refused(
    stack: Stack, tokens: TokenStore
) -> None:
    """A retirement whose answer the client has seen holds for its next request: ingest's
    cache of KPI facts was trusted for up to two seconds, and readings sent meanwhile
    were accepted and counted in the retired KPI."""
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    kpi = new_kpi(a)
    at = "2026-03-01T00:00:00Z"
    accepted = a.post("/v1/readings", json={"readings": [
        {"kpi_id": kpi["id"], "value": 1, "observed_at": at, "reading_id": "before"},
    ]})  # fmt: skip
    assert accepted.json()["accepted"] == 1, accepted.text
    assert a.post(f"/v1/kpis/{kpi['id']}/retire", json={"reason": "old"}).status_code == 200
    late = a.post("/v1/readings", json={"readings": [
        {"kpi_id": kpi["id"], "value": 2, "observed_at": at, "reading_id": "after"},
    ]})  # fmt: skip
    assert late.status_code == 202
    assert late.json()["accepted"] == 0
    assert late.json()["rejected"] == [{"index": 0, "error": f"KPI {kpi['id']} is retired"}]


def test_a_number_beyond_a_double_rejects_its_reading_alone(
    stack: Stack, tokens: TokenStore
) -> None:
    """1e400 is valid JSON that the fast parser refuses: the whole batch got a 400, though
    each reading is judged alone. Invalid JSON (NaN) is still a 400."""
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    kpi = new_kpi(a)["id"]
    at = "2026-03-01T00:00:00Z"
    body = (
        '{"readings": ['
        f'{{"kpi_id": "{kpi}", "value": 1e400, "observed_at": "{at}", "reading_id": "a"}},'
        f'{{"kpi_id": "{kpi}", "value": -1e400, "observed_at": "{at}", "reading_id": "b"}},'
        f'{{"kpi_id": "{kpi}", "value": 2.5, "observed_at": "{at}", "reading_id": "c"}}'
        "]}"
    )
    headers = {"content-type": "application/json"}
    answer = a.post("/v1/readings", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert result["accepted"] == 1
    assert [r["index"] for r in result["rejected"]] == [0, 1]
    assert all("finite" in r["error"] for r in result["rejected"]), result
    problem(a.post("/v1/readings", content=body.replace("2.5", "NaN"), headers=headers), 400)


def test_a_new_key_results_location_answers_with_it(stack: Stack, tokens: TokenStore) -> None:
    """The Location of POST …/key-results named a URL without a GET (405)."""
    a = api(stack, tokens, f"org-{uuid.uuid4().hex[:6]}")
    oid = new_objective(a)["id"]
    made = a.post(f"/v1/objectives/{oid}/key-results",
                  json={"title": "Users", "kind": "metric", "start": 0, "target": 100})  # fmt: skip
    assert made.status_code == 201, made.text
    location = made.headers["location"]
    kr = a.get(location, params={"min_position": made.json()["position"]})
    assert kr.status_code == 200, kr.text
    assert (kr.json()["id"], kr.json()["title"], kr.json()["target"]) == (
        made.json()["id"], "Users", 100.0,
    )  # fmt: skip
    assert kr.headers["etag"] == f'"{made.json()["version"]}"'
    problem(a.get(f"/v1/objectives/{oid}/key-results/{uuid.uuid4()}"), 404)
    problem(a.get(f"/v1/objectives/{uuid.uuid4()}/key-results/{made.json()['id']}"), 404)


def test_demo_seeds_once_and_a_rerun_streams_into_the_same_organisation(
    stack: Stack, tokens: TokenStore, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`okrstream demo` run twice seeded a second copy of the company (15 of each title
    after five runs); and it took --rate 0 or -5."""
    from services.cli.main import parser
    from services.demo.main import run
    from services.eventstore.store import EventStore

    org = f"demo-{uuid.uuid4().hex[:6]}"
    token = tokens.create(org, ["read", "write", "ingest"])
    monkeypatch.setenv("OKR_DATA_DIR", str(stack.data_dir))
    argv = ["demo", "--url", stack.url, "--token", token, "--duration", "1", "--rate", "4"]
    reader = Api(stack.url, token)

    def titles() -> list[str]:
        """The organisation's objectives once everything written so far is projected."""
        store = EventStore.from_settings(stack.settings)
        try:
            head = store.max_position()
        finally:
            store.close()
        params = {"limit": 1000, "include_archived": "true", "min_position": head}
        answer = reader.get("/v1/objectives", params=params)
        assert answer.status_code == 200, answer.text
        return sorted(o["title"] for o in answer.json()["items"])

    assert run(parser().parse_args(argv)) == 0
    seeded = titles()
    assert seeded
    capsys.readouterr()
    assert run(parser().parse_args(argv)) == 0
    assert "seeded already" in capsys.readouterr().out
    assert titles() == seeded, "a second run seeded nothing more"
    for rate in ("0", "-5", "nan"):
        with pytest.raises(SystemExit):
            parser().parse_args([*argv[:-1], rate])

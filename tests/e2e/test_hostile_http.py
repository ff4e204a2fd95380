"""Hostile HTTP bodies against every POST/PATCH/DELETE route of the front door (issue 6).

The contract (API.md, "Conventions"): a hostile body gets a 4xx problem+json answer
(status, title, detail) or is accepted and stored verbatim — never a 5xx, never a silently
altered value. After the barrage the stack still answers /healthz and takes a normal write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from contracts.readings import reading_stream_id
from services.auth.tokens import TokenStore
from services.eventstore import EventStore
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

PERIOD = {"start": "2026-01-01", "end": "2026-12-31"}
DEPTH = 10_000

INJECTIONS = [
    "'; DROP TABLE stored_events; --",
    "Robert'); DROP TABLE students; --",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "a\u0000b",
    "🎯📈 ok ✅ 👩🏽‍💻",
    "\u202eevil\u202c \u200f\u05e9\u05dc\u05d5\u05dd\u200e",
    "\\u0000 \\n not escapes",
    "${jndi:ldap://x/a} {{7*7}} %s%n",
    "line1\r\nline2\ttab",
    "\ud800 lone surrogate",
]


# -- helpers -------------------------------------------------------------------------------


def checked(answer: httpx.Response) -> httpx.Response:
    """Never a 5xx; every error is a problem+json body with status, title and detail."""
    request = answer.request
    where = f"{request.method} {request.url.path} -> {answer.status_code}: {answer.text[:500]}"
    assert answer.status_code < 500, where
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith("application/problem+json"), where
        body = answer.json()
        assert body["status"] == answer.status_code, where
        assert isinstance(body["title"], str), where
        assert body["title"], where
        assert isinstance(body["detail"], str), where
    return answer


def rejected(answer: httpx.Response, *allowed: int) -> None:
    checked(answer)
    assert answer.status_code in allowed, (answer.status_code, answer.text[:300])


def raw(body: Any) -> bytes:
    """JSON text as Python writes it (NaN/Infinity literals, lone surrogates allowed)."""
    return json.dumps(body).encode("utf-8", "surrogatepass")


class Api:
    def __init__(self, stack: Stack, org: str, token: str) -> None:
        self.org = org
        self.client = httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def send(self, method: str, path: str, content: bytes | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return checked(self.client.request(method, path, content=content, headers=headers))

    def ok(self, method: str, path: str, body: Any) -> dict[str, Any]:
        answer = self.send(method, path, raw(body))
        assert answer.status_code in (200, 201, 202), answer.text
        result: dict[str, Any] = answer.json()
        return result

    def get(self, path: str, position: int) -> dict[str, Any]:
        answer = self.client.get(path, params={"min_position": position})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def events(self, objective_id: str, position: int) -> list[dict[str, Any]]:
        self.get(f"/v1/objectives/{objective_id}", position)
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            answer = self.client.get(f"/v1/objectives/{objective_id}/events", params=params)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items


def texts(value: Any) -> list[str]:
    """Every string anywhere in a decoded JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in texts(v)]
    if isinstance(value, list):
        return [s for v in value for s in texts(v)]
    return []


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> Iterator[TokenStore]:
    store = TokenStore.from_settings(stack.settings)
    yield store
    store.close()


@pytest.fixture(scope="module")
def a(stack: Stack, tokens: TokenStore) -> Api:
    org = f"hostile-{uuid.uuid4().hex[:8]}"
    return Api(stack, org, tokens.create(org, ["read", "write", "ingest"]))


def new_objective(a: Api, **extra: Any) -> str:
    body = {"title": "Grow", "owner": "ana", "level": "team", "period": PERIOD, **extra}
    return str(a.ok("POST", "/v1/objectives", body)["id"])


def new_kr(a: Api, oid: str, **extra: Any) -> str:
    body = {"title": "Revenue", "kind": "metric", "start": 0, "target": 100, **extra}
    return str(a.ok("POST", f"/v1/objectives/{oid}/key-results", body)["id"])


def new_kpi(a: Api, **extra: Any) -> str:
    body = {"name": "NPS", "direction": "increase", "target": 50, "interval": "week",
            "aggregation": "avg", **extra}  # fmt: skip
    return str(a.ok("POST", "/v1/kpis", body)["id"])


def routes(a: Api) -> list[tuple[str, str]]:
    """Every body-taking route, each on resources of its own (a hostile body that is
    accepted, e.g. `null` on archive, must not change what the other routes see)."""
    oid = new_objective(a)
    kr = new_kr(a, oid)
    kpi = new_kpi(a)
    o = "/v1/objectives"
    return [
        ("POST", o),
        ("PATCH", f"{o}/{oid}"),
        ("POST", f"{o}/{oid}/key-results"),
        ("PATCH", f"{o}/{oid}/key-results/{kr}"),
        ("POST", f"{o}/{oid}/key-results/{kr}/check-ins"),
        ("POST", f"{o}/{new_objective(a)}/close"),
        ("POST", f"{o}/{new_objective(a)}/reopen"),
        ("POST", f"{o}/{new_objective(a)}/archive"),
        ("POST", f"{o}/{oid}/key-results/{new_kr(a, oid)}/promote"),
        ("DELETE", f"{o}/{oid}/key-results/{new_kr(a, oid)}"),
        ("POST", "/v1/kpis"),
        ("PATCH", f"/v1/kpis/{kpi}"),
        ("POST", f"/v1/kpis/{new_kpi(a)}/retire"),
        ("POST", "/v1/readings"),
    ]


# Fields a create may take as null; in a PATCH body a null means "leave as is".
OPTIONAL = {"reason", "note", "confidence", "value"}

# -- the barrage ---------------------------------------------------------------------------

GARBAGE: dict[str, bytes] = {
    "deep arrays": b"[" * DEPTH + b"]" * DEPTH,
    "deep objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "deep in a field": b'{"title":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "deep in readings": b'{"readings":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "moderately deep (under parser limits)": b'{"readings":[' + b"[" * 900 + b"]" * 900 + b"]}",
    "invalid utf-8": b'{"title": "\xff\xfe\xc3\x28", "note": "\xed\xa0\x80"}',
    "invalid utf-8 key": b'{"\xff": 1}',
    "utf-16 bom": "\ufeff{}".encode("utf-16"),
    "bare NaN": b"NaN",
    "bare Infinity": b"Infinity",
    "bare -Infinity": b"-Infinity",
    "empty": b"",
    "whitespace": b"   \n\t ",
    "truncated": b'{"title": "x", ',
    "trailing garbage": b'{"title": "x"} {"title": "y"}',
    "single quotes": b"{'title': 'x'}",
    "comment": b'{"title": "x" /* c */}',
    "binary garbage": bytes(range(256)) * 8,
    "nul bytes": b"\x00" * 64,
    "number": b"1e999999",
    "huge int": b'{"value": ' + b"9" * 5000 + b"}",
    "string": b'"x"',
    "array": b"[]",
    "null": b"null",
    "true": b"true",
}


@pytest.fixture(scope="module")
def all_routes(a: Api) -> list[tuple[str, str]]:
    return routes(a)


def test_malformed_and_garbage_bodies(a: Api, all_routes: list[tuple[str, str]]) -> None:
    for method, path in all_routes:
        for name, body in GARBAGE.items():
            answer = a.send(method, path, body)
            # An optional body (close/reopen/archive/promote/retire/DELETE of a key
            # result) may be `null` or nothing; else a 4xx.
            if path == "/v1/readings" and answer.status_code == 202:
                # Items are judged one by one: a nested list is a rejected reading.
                assert answer.json()["accepted"] == 0, (name, answer.text)
            elif answer.status_code < 400:
                assert name in {"empty", "null", "whitespace"}, (method, path, name)


def test_non_finite_numbers(a: Api, all_routes: list[tuple[str, str]]) -> None:
    oid = new_objective(a)
    kr = new_kr(a, oid)
    kpi = new_kpi(a)
    for literal in ("NaN", "Infinity", "-Infinity"):
        n = float(literal)
        cases: list[tuple[str, str, Any]] = [
            ("POST", f"/v1/objectives/{oid}/key-results",
             {"title": "x", "kind": "metric", "start": n, "target": 1}),
            ("POST", f"/v1/objectives/{oid}/key-results",
             {"title": "x", "kind": "metric", "start": 0, "target": n}),
            ("POST", f"/v1/objectives/{oid}/key-results",
             {"title": "x", "kind": "metric", "start": 0, "target": 1, "weight": n}),
            ("PATCH", f"/v1/objectives/{oid}/key-results/{kr}", {"target": n}),
            ("PATCH", f"/v1/objectives/{oid}/key-results/{kr}", {"weight": n}),
            ("POST", f"/v1/objectives/{oid}/key-results/{kr}/check-ins", {"value": n}),
            ("POST", f"/v1/objectives/{oid}/key-results/{kr}/check-ins", {"confidence": n}),
            ("POST", f"/v1/objectives/{oid}/key-results/{kr}/promote", {"amber": n}),
            ("POST", "/v1/kpis", {"name": "x", "direction": "increase", "target": n,
                                  "interval": "day", "aggregation": "sum"}),
            ("POST", "/v1/kpis", {"name": "x", "direction": "increase", "target": 1,
                                  "amber": n, "interval": "day", "aggregation": "sum"}),
            ("PATCH", f"/v1/kpis/{kpi}", {"target": n}),
            ("PATCH", f"/v1/kpis/{kpi}", {"amber": n}),
        ]  # fmt: skip
        for method, path, body in cases:
            rejected(a.send(method, path, raw(body)), 400, 422)
        reading = {"kpi_id": kpi, "value": n, "observed_at": "2026-03-01T00:00:00Z"}
        answer = a.send("POST", "/v1/readings", raw({"readings": [reading]}))
        # Readings are judged one by one: a non-finite value is a rejected reading (202
        # with it in `rejected`) or the whole body is refused; never accepted.
        if answer.status_code == 202:
            assert answer.json()["accepted"] == 0
            assert [r["index"] for r in answer.json()["rejected"]] == [0]
        else:
            rejected(answer, 400, 422)


def test_wrong_types_and_unknown_fields(a: Api, all_routes: list[tuple[str, str]]) -> None:
    oid = new_objective(a)
    kr = new_kr(a, oid)
    kpi = new_kpi(a)
    good_objective = {"title": "t", "owner": "o", "level": "team", "period": PERIOD}
    good_kpi = {"name": "n", "direction": "increase", "target": 5, "interval": "day",
                "aggregation": "sum"}  # fmt: skip
    good_kr = {"title": "x", "kind": "metric", "start": 0, "target": 1}
    wrong_values: list[Any] = [None, 1, "1", [], {}, ["t"], {"a": 1}, True, 1.5]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/objectives", good_objective),
        ("PATCH", f"/v1/objectives/{oid}", {"title": "t", "period": PERIOD}),
        ("POST", f"/v1/objectives/{oid}/key-results", good_kr),
        ("PATCH", f"/v1/objectives/{oid}/key-results/{kr}", {"target": 2, "reason": "r"}),
        ("POST", f"/v1/objectives/{oid}/key-results/{kr}/check-ins",
         {"value": 1, "confidence": 0.5, "note": "n"}),
        ("POST", "/v1/kpis", good_kpi),
        ("PATCH", f"/v1/kpis/{kpi}", {"name": "n", "target": 6, "reason": "r"}),
    ]  # fmt: skip
    for method, path, good in cases:
        for field in good:
            for wrong in wrong_values:
                answer = a.send(method, path, raw({**good, field: wrong}))
                if answer.status_code < 400:
                    # Only a value pydantic may lawfully coerce (a number as a number, a
                    # numeric string in lax mode is refused by strictness elsewhere).
                    assert not isinstance(wrong, list | dict), (method, path, field, wrong)
                    if wrong is None and method == "POST":
                        assert field in OPTIONAL, (method, path, field)
        rejected(a.send(method, path, raw({**good, "surprise": 1})), 422)
        rejected(a.send(method, path, raw([good])), 400, 422)
    # Optional-body commands: unknown fields and wrong types are 422 too.
    for method, path in all_routes:
        rejected(a.send(method, path, raw({"surprise": "x"})), 422)
        rejected(a.send(method, path, raw({"occurred_at": "yesterday"})), 422)
        rejected(a.send(method, path, raw({"occurred_at": "2026-01-01T00:00:00"})), 422)
    # Readings: wrong shapes of the envelope are refused, wrong items are rejected alone.
    for body in ({}, {"readings": None}, {"readings": {}}, {"readings": "x"},
                 {"readings": [], "extra": 1}):  # fmt: skip
        rejected(a.send("POST", "/v1/readings", raw(body)), 400, 422)
    items: list[Any] = [None, 1, "x", [], {}, {"kpi_id": kpi},
                        {"kpi_id": "nope", "value": 1, "observed_at": "2026-03-01T00:00:00Z"},
                        {"kpi_id": kpi, "value": "1", "observed_at": "2026-03-01T00:00:00Z"},
                        {"kpi_id": kpi, "value": [1], "observed_at": "2026-03-01T00:00:00Z"},
                        {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00"},
                        {"kpi_id": kpi, "value": 1, "observed_at": 12},
                        {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00Z",
                         "reading_id": ""},
                        {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00Z",
                         "reading_id": "r" * 201},
                        {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00Z",
                         "source": {"a": 1}},
                        {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00Z",
                         "surprise": 1}]  # fmt: skip
    answer = a.send("POST", "/v1/readings", raw({"readings": items}))
    if answer.status_code == 202:
        body = answer.json()
        rejected_at = {r["index"] for r in body["rejected"]}
        # pydantic's lax mode may coerce "1" (index 7); every other item is wrong.
        assert rejected_at >= set(range(len(items))) - {7}, body
        assert all(isinstance(r["error"], str) for r in body["rejected"])


NOT_RFC3339 = ["1764565200", "1764565200.5", "2026-11-20T10:00Z", "2026-11-20T10:00:00+0000",
               "2026-11-20 10:00:00Z", "2026-11-20", "20261120T100000Z"]  # fmt: skip
RFC3339 = ["2026-01-05T00:00:00Z", "2026-01-05T00:00:00.123456+02:00", "2026-01-05t00:00:00z"]


def test_datetimes_are_rfc3339_text_and_period_dates_yyyy_mm_dd(a: Api) -> None:
    """No Unix time in a string, no time without seconds, no +0000 offset, no space for the
    T: in command bodies, readings and read parameters; no date-time as a period date."""

    def refused_at(answer: httpx.Response, loc: list[str]) -> None:
        rejected(answer, 422)
        assert [e["loc"] for e in answer.json()["errors"]] == [loc], answer.text

    good = {"title": "t", "owner": "o", "level": "team", "period": PERIOD}
    for bad in NOT_RFC3339:
        answer = a.send("POST", "/v1/objectives", raw({**good, "occurred_at": bad}))
        refused_at(answer, ["body", "occurred_at"])
    for when in RFC3339:
        a.ok("POST", "/v1/objectives", {**good, "occurred_at": when})
    for period, field in (({"start": "2026-01-01T00:00:00Z", "end": "2026-12-31"}, "start"),
                          ({"start": "2026-01-01", "end": "1798675200"}, "end")):  # fmt: skip
        answer = a.send("POST", "/v1/objectives", raw({**good, "period": period}))
        refused_at(answer, ["body", "period", field])
    oid = new_objective(a)
    kpi = new_kpi(a)
    items = [{"kpi_id": kpi, "value": n, "observed_at": t}
             for n, t in enumerate(NOT_RFC3339 + RFC3339)]  # fmt: skip
    body = a.ok("POST", "/v1/readings", {"readings": items})
    assert [r["index"] for r in body["rejected"]] == list(range(len(NOT_RFC3339))), body
    assert all(r["error"].startswith("observed_at:") for r in body["rejected"]), body
    assert body["accepted"] == len(RFC3339)
    for path, name in ((f"/v1/objectives/{oid}", "as_of"), (f"/v1/objectives/{oid}", "known_at"),
                       (f"/v1/objectives/{oid}/history", "from"), (f"/v1/kpis/{kpi}", "as_of"),
                       (f"/v1/kpis/{kpi}/series", "to")):  # fmt: skip
        for bad in NOT_RFC3339:
            refused_at(checked(a.client.get(path, params={name: bad})), ["query", name])
        for when in RFC3339:
            answer = checked(a.client.get(path, params={name: when}))
            assert answer.status_code in (200, 404), (path, name, when, answer.text)


def test_removing_a_key_result_takes_occurred_at_and_nothing_else(a: Api) -> None:
    oid = new_objective(a)
    kr = new_kr(a, oid)
    path = f"/v1/objectives/{oid}/key-results/{kr}"
    rejected(a.send("DELETE", path, raw({"bogus": 1})), 422)
    rejected(a.send("DELETE", path, raw({"occurred_at": "1764565200"})), 422)
    rejected(a.send("DELETE", path, raw({"reason": "r"})), 422)
    done = a.ok("DELETE", path, {"occurred_at": "2026-02-01T00:00:00+01:00"})
    [removed] = [e for e in a.events(oid, done["position"]) if e["type"] == "key_result.removed"]
    assert removed["occurred_at"].startswith("2026-01-31T23:00:00"), removed
    other = new_kr(a, oid)  # no body: as before, now
    answer = a.client.delete(f"/v1/objectives/{oid}/key-results/{other}")
    assert answer.status_code == 200, answer.text


def test_size_limits(a: Api, all_routes: list[tuple[str, str]]) -> None:
    oid = new_objective(a)
    kr = new_kr(a, oid)
    kpi = new_kpi(a)
    mb = "x" * 1_000_000
    for method, path, body in [
        ("POST", "/v1/objectives", {"title": mb, "owner": "o", "level": "team", "period": PERIOD}),
        ("POST", "/v1/objectives", {"title": "t", "owner": "o", "level": "team", "period": PERIOD,
                                    "description": mb}),
        ("POST", f"/v1/objectives/{oid}/key-results/{kr}/check-ins", {"value": 1, "note": mb}),
        ("POST", "/v1/kpis", {"name": mb, "direction": "increase", "target": 5,
                              "interval": "day", "aggregation": "sum"}),
        ("PATCH", f"/v1/kpis/{kpi}", {"name": "n", "reason": mb}),
    ]:  # fmt: skip
        rejected(a.send(method, path, raw(body)), 413, 422)
    reading = {"kpi_id": kpi, "value": 1, "observed_at": "2026-03-01T00:00:00Z", "source": mb}
    answer = a.send("POST", "/v1/readings", raw({"readings": [reading]}))
    if answer.status_code == 202:
        assert answer.json()["accepted"] == 0
    # Over the body limit (8 MB by default): 413 on every route, declared or chunked.
    huge = b'{"title": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    for method, path in all_routes:
        rejected(a.send(method, path, huge), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"readings": [], "x": "'
        for _ in range(10):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    answer = a.client.post("/v1/readings", content=chunks())
    rejected(answer, 413)
    # 10,001 readings (well under the byte limit) → 413; 10,000 are taken.
    many = [
        {"kpi_id": kpi, "value": i, "observed_at": "2026-03-01T00:00:00Z"} for i in range(10_001)
    ]
    rejected(a.send("POST", "/v1/readings", raw({"readings": many})), 413)
    taken = a.send("POST", "/v1/readings", raw({"readings": many[:10_000]}))
    assert taken.status_code == 202, taken.text


def test_injection_strings_are_stored_verbatim(stack: Stack, a: Api) -> None:
    kpi_for_readings = new_kpi(a)
    for s in INJECTIONS:
        owner = s[:100]
        # Objective: title, description, owner.
        made = a.send(
            "POST",
            "/v1/objectives",
            raw({"title": s, "description": s, "owner": owner, "level": "team",
                 "period": PERIOD}),
        )  # fmt: skip
        if made.status_code >= 400:
            continue  # refused (e.g. NUL or a lone surrogate): a 4xx is lawful
        oid = made.json()["id"]
        view = a.get(f"/v1/objectives/{oid}", made.json()["position"])
        assert (view["title"], view["description"], view["owner"]) == (s, s, owner), repr(s)
        # Key result: title, unit; update: title, reason; check-in note; close note.
        kr_body = {"title": s, "kind": "metric", "start": 0, "target": 10, "unit": s[:50]}
        kr = a.ok("POST", f"/v1/objectives/{oid}/key-results", kr_body)
        a.ok("PATCH", f"/v1/objectives/{oid}/key-results/{kr['id']}",
             {"title": s + "!", "target": 20, "reason": s})  # fmt: skip
        a.ok("POST", f"/v1/objectives/{oid}/key-results/{kr['id']}/check-ins",
             {"value": 3, "note": s})  # fmt: skip
        closed = a.ok("POST", f"/v1/objectives/{oid}/close", {"note": s})
        view = a.get(f"/v1/objectives/{oid}", closed["position"])
        (kr_view,) = view["key_results"]
        assert (kr_view["title"], kr_view["unit"]) == (s + "!", s[:50]), repr(s)
        seen = [t for e in a.events(oid, closed["position"]) for t in texts(e)]
        for expected in (s, s + "!", s[:50]):
            assert expected in seen, (repr(expected), seen)
        # KPI: name, unit, owner, description; revise reason; retire reason.
        kpi = a.ok("POST", "/v1/kpis",
                   {"name": s, "unit": s[:50], "owner": owner, "description": s,
                    "direction": "increase", "target": 5, "interval": "day",
                    "aggregation": "sum"})  # fmt: skip
        kv = a.get(f"/v1/kpis/{kpi['id']}", kpi["position"])
        assert (kv["name"], kv["unit"]) == (s, s[:50]), repr(s)
        for name, expected in (("owner", owner), ("description", s)):
            if name in kv:
                assert kv[name] == expected, (name, repr(s))
        revised = a.ok("PATCH", f"/v1/kpis/{kpi['id']}", {"name": s + "?", "reason": s})
        assert a.get(f"/v1/kpis/{kpi['id']}", revised["position"])["name"] == s + "?"
        a.ok("POST", f"/v1/kpis/{kpi['id']}/retire", {"reason": s})
        store = EventStore.from_settings(stack.settings)
        try:
            kpi_texts = [t for e in store.read_stream(uuid.UUID(kpi["id"]))
                         for t in texts(e.model_dump(mode="json"))]  # fmt: skip
            assert kpi_texts.count(s) >= 3, (repr(s), kpi_texts)  # description, reason ×2
            # Readings: source and reading_id, stored verbatim.
            reading = {"kpi_id": kpi_for_readings, "value": 1.5, "reading_id": s, "source": s,
                       "observed_at": "2026-03-01T00:00:00Z"}  # fmt: skip
            answer = a.send("POST", "/v1/readings", raw({"readings": [reading]}))
            assert answer.status_code == 202, answer.text
            if answer.json()["accepted"] == 1:
                stream = reading_stream_id(a.org, kpi_for_readings, s)
                (recorded,) = store.read_stream(stream)
                dumped = recorded.model_dump(mode="json")
                assert dumped.get("source") == s, dumped
                assert dumped.get("reading_id") == s, dumped
                again = a.send("POST", "/v1/readings", raw({"readings": [reading]}))
                assert again.json()["duplicates"] == 1, again.text
            else:
                assert [r["index"] for r in answer.json()["rejected"]] == [0]
        finally:
            store.close()


def test_still_healthy_and_writable(stack: Stack, a: Api) -> None:
    health = httpx.get(f"{stack.url}/healthz", timeout=10)
    assert health.status_code == 200
    body = {"title": "After the storm", "owner": "ana", "level": "team", "period": PERIOD}
    made = a.ok("POST", "/v1/objectives", body)
    view = a.get(f"/v1/objectives/{made['id']}", made["position"])
    assert view["title"] == "After the storm"

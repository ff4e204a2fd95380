"""Idempotency-Key on POST: the first answer is replayed, nothing is appended twice.

Keys are scoped by organisation and kept durably in the event store's database engine (a
SQLite file in OKR_DATA_DIR, or the PostgreSQL schema) for RETENTION_S.

Protocol and the crash window. `begin` records the key as *pending* with the request's
fingerprint before the command runs; `complete` stores the answer after the append has
committed. A crash between the two leaves the key pending. Commands therefore derive every
new id (resources and events) from (organisation, key, fingerprint): a retry after
STALE_PENDING_S re-runs the command, finds the events it committed the first time by their
derived event ids, and answers from them instead of appending again. The fingerprint is
part of the seed because records expire: after RETENTION_S the same key with another
request is a new command with new ids (the same request again still finds its events).
Readings are idempotent by their own reading ids, so a re-run there only moves the count
from `accepted` to `duplicates`.

What is replayed. A success (< 300) and a definitive client error (a 4xx `Problem` that
decides this request: 400, 404, 409, 422, ...) are stored and replayed for the same key
and fingerprint; a replayed problem is raised again as that `Problem`, so it renders as the
first one did (application/problem+json, same body and headers). A transient failure (5xx,
429, 401/403, a 412 for a stale If-Match, any other exception) appends nothing and
releases the key: a retry runs again.

A repeat that finds the first request still running waits for its answer (polling, holding
no transaction) up to IN_PROGRESS_WAIT_S and replays it; if the first request failed
transiently meanwhile the repeat takes the key over and runs; still running after the wait,
it is answered 503 with Retry-After (never 409, which is kept for broken invariants).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.http.problems import Problem, problem_response
from services.projectionstore.db import Database
from services.settings import Settings

RETENTION_S = 24 * 3600.0
STALE_PENDING_S = 30.0
MAX_KEY_LENGTH = 200
IN_PROGRESS_WAIT_S = 10.0
IN_PROGRESS_POLL_S = 0.05
# Client errors that say nothing final about the request (who asks, how often, too early;
# 412: a stale If-Match, which the fingerprint does not cover, so the retry with a fresh
# one is the same request): answered again rather than replayed.
TRANSIENT_CLIENT_ERRORS = frozenset({401, 403, 407, 408, 412, 425, 429})

DDL = (
    "CREATE TABLE IF NOT EXISTS idempotency_keys ("
    " org_id TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " state TEXT NOT NULL, status INTEGER, body TEXT, headers TEXT,"
    " created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (org_id, idem_key))"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as stored for replay: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Begun:
    """The key is ours now. `retried`: an earlier attempt with this key may have committed."""

    retried: bool


def fingerprint(*parts: str | bytes) -> str:
    """sha256 over the request's identifying parts (method, path, canonical body)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


class IdempotencyStore:
    """Durable Idempotency-Key records, one table, scoped by organisation."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        wait_s: float = IN_PROGRESS_WAIT_S,
        poll_s: float = IN_PROGRESS_POLL_S,
    ) -> None:
        self.db = db
        self.clock = clock
        self.wait_s = wait_s
        self.poll_s = poll_s
        with db.transaction() as cur:
            cur.execute(DDL)
        self._lock = threading.Lock()
        self._last_purge = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IdempotencyStore:
        return cls(Database.from_settings(settings, settings.data_dir / "idempotency.sqlite"))

    def close(self) -> None:
        self.db.close()

    def begin(self, org_id: str, key: str, fp: str) -> Answer | Begun:
        """Claim `key` for a request with fingerprint `fp`, or the answer to replay.

        While the first request with this key is still running, waits (up to `wait_s`,
        polling every `poll_s` without holding a transaction) for its answer to replay, or
        for the key to be released or go stale to take it over. Raises Problem 422 when the
        key was used with another request, 503 (Retry-After) when the first request is
        still running after the wait.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Problem(422, f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} characters")
        self._purge_now_and_then()
        deadline = time.monotonic() + self.wait_s
        while True:
            claimed = self._claim(org_id, key, fp)
            if claimed is not None:
                return claimed
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Problem(
                        503,
                        "a request with this Idempotency-Key is still in progress",
                        headers={"Retry-After": "1"},
                    )
                time.sleep(min(self.poll_s, remaining))
                if not self._in_progress(org_id, key, fp):
                    break

    def _claim(self, org_id: str, key: str, fp: str) -> Answer | Begun | None:
        """One attempt: the key claimed, the answer to replay, or None while in progress."""
        now = self.clock()
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO idempotency_keys (org_id, idem_key, fingerprint, state, created_at)"
                " VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (org_id, idem_key) DO NOTHING",
                (org_id, key, fp, now),
            )
            if cur.rowcount == 1:
                return Begun(retried=False)
            row = cur.execute(
                "SELECT fingerprint, state, status, body, headers, created_at"
                " FROM idempotency_keys WHERE org_id = ? AND idem_key = ?",
                (org_id, key),
            ).fetchone()
            if row is None:  # released between the INSERT and the SELECT: try again
                return None
            stored_fp, state, status, body, headers, created_at = row
            if stored_fp != fp:
                raise Problem(422, "this Idempotency-Key was already used with another request")
            if state == "done":
                return Answer(int(status), orjson.loads(body), orjson.loads(headers))
            if now - float(created_at) < STALE_PENDING_S:
                return None
            # The first attempt died between claiming the key and answering: take over.
            cur.execute(
                "UPDATE idempotency_keys SET created_at = ? WHERE org_id = ? AND idem_key = ?",
                (now, org_id, key),
            )
            return Begun(retried=True)

    def _in_progress(self, org_id: str, key: str, fp: str) -> bool:
        """Whether `key` is still pending and fresh for `fp` (a short read, no lock kept)."""
        with self.db.transaction(write=False) as cur:
            row = cur.execute(
                "SELECT fingerprint, state, created_at"
                " FROM idempotency_keys WHERE org_id = ? AND idem_key = ?",
                (org_id, key),
            ).fetchone()
        if row is None:
            return False
        stored_fp, state, created_at = row
        return bool(
            stored_fp == fp
            and state == "pending"
            and self.clock() - float(created_at) < STALE_PENDING_S
        )

    def complete(self, org_id: str, key: str, answer: Answer) -> None:
        """Store the answer to replay for `key`."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE idempotency_keys SET state = 'done', status = ?, body = ?, headers = ?"
                " WHERE org_id = ? AND idem_key = ?",
                (
                    answer.status,
                    orjson.dumps(answer.body).decode(),
                    orjson.dumps(dict(answer.headers)).decode(),
                    org_id,
                    key,
                ),
            )

    def abandon(self, org_id: str, key: str) -> None:
        """Forget a pending key whose request failed without appending anything."""
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM idempotency_keys WHERE org_id = ? AND idem_key = ? "
                "AND state = 'pending'",
                (org_id, key),
            )

    def _purge_now_and_then(self) -> None:
        now = self.clock()
        with self._lock:
            if now - self._last_purge < 600:
                return
            self._last_purge = now
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now - RETENTION_S,))


def definitive(problem: Problem) -> bool:
    """Whether `problem` is a decision about the request, to replay for its key."""
    return 400 <= problem.status < 500 and problem.status not in TRANSIENT_CLIENT_ERRORS


def problem_answer(problem: Problem) -> Answer:
    """`problem` as stored for replay: its status, problem+json body and headers."""
    rendered = problem_response(
        problem.status,
        problem.detail,
        title=problem.title,
        errors=problem.errors,
        headers=problem.headers,
    )
    return Answer(problem.status, orjson.loads(bytes(rendered.body)), dict(problem.headers))


def replayed_problem(answer: Answer) -> Problem:
    """The stored problem answer raised again: rendered as it was the first time."""
    body = answer.body
    return Problem(
        answer.status,
        str(body.get("detail", "")),
        title=body.get("title"),
        errors=body.get("errors"),
        headers=answer.headers,
    )


def run_once(
    store: IdempotencyStore,
    org_id: str,
    key: str | None,
    fp: str,
    produce: Callable[[bool], Answer],
) -> Answer:
    """The answer of `produce(retried)`, run at most once per (org, key) and fingerprint.

    Without a key, `produce(False)` simply runs. With one, a repeat gets the stored answer:
    a success is returned, a definitive client error (`Problem` 4xx, see `definitive`) is
    raised again. A transient failure (any other exception) releases the key, since nothing
    was appended.
    """
    if key is None:
        return produce(False)
    begun = store.begin(org_id, key, fp)
    if isinstance(begun, Answer):
        if begun.status >= 400:  # only problems are stored with an error status
            raise replayed_problem(begun)
        return begun
    try:
        answer = produce(begun.retried)
    except Problem as problem:
        if not definitive(problem):
            store.abandon(org_id, key)
            raise
        try:
            store.complete(org_id, key, problem_answer(problem))
        except BaseException:
            # Not recorded: release the key (nothing was appended) and say so rather than
            # give an answer a repeat might not get.
            with contextlib.suppress(Exception):
                store.abandon(org_id, key)
            raise
        raise
    except BaseException:
        store.abandon(org_id, key)
        raise
    if answer.status < 300:
        store.complete(org_id, key, answer)
    else:
        store.abandon(org_id, key)
    return answer

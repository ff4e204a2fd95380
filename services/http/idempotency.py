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
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.http.problems import Problem
from services.projectionstore.db import Database
from services.settings import Settings

RETENTION_S = 24 * 3600.0
STALE_PENDING_S = 30.0
MAX_KEY_LENGTH = 200

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

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
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

        Raises Problem 422 when the key was used with another request, 409 while the first
        request with this key is still running.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Problem(422, f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} characters")
        self._purge_now_and_then()
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
            assert row is not None
            stored_fp, state, status, body, headers, created_at = row
            if stored_fp != fp:
                raise Problem(422, "this Idempotency-Key was already used with another request")
            if state == "done":
                return Answer(int(status), orjson.loads(body), orjson.loads(headers))
            if now - float(created_at) < STALE_PENDING_S:
                raise Problem(
                    409,
                    "a request with this Idempotency-Key is still in progress",
                    headers={"Retry-After": "1"},
                )
            # The first attempt died between claiming the key and answering: take over.
            cur.execute(
                "UPDATE idempotency_keys SET created_at = ? WHERE org_id = ? AND idem_key = ?",
                (now, org_id, key),
            )
            return Begun(retried=True)

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


def run_once(
    store: IdempotencyStore,
    org_id: str,
    key: str | None,
    fp: str,
    produce: Callable[[bool], Answer],
) -> Answer:
    """The answer of `produce(retried)`, run at most once per (org, key) and fingerprint.

    Without a key, `produce(False)` simply runs. With one, a repeat gets the stored answer;
    a failure (any exception) releases the key, since nothing was appended.
    """
    if key is None:
        return produce(False)
    begun = store.begin(org_id, key, fp)
    if isinstance(begun, Answer):
        return begun
    try:
        answer = produce(begun.retried)
    except BaseException:
        store.abandon(org_id, key)
        raise
    if answer.status < 300:
        store.complete(org_id, key, answer)
    else:
        store.abandon(org_id, key)
    return answer

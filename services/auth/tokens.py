"""API tokens: `okr_<random>`; only their sha256 is stored.

Tokens carry 256 bits of randomness, so a plain sha256 is enough (no password stretching
needed); the stored hash is compared in constant time. New tokens are found by the running
services on first use: no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from services.projectionstore.db import Database
from services.settings import Settings

Scope = Literal["read", "write", "ingest"]
SCOPES: tuple[Scope, ...] = ("read", "write", "ingest")
TOKEN_PREFIX = "okr_"  # noqa: S105 (a prefix, not a secret)
CACHE_TTL_S = 30.0

DDL = (
    "CREATE TABLE IF NOT EXISTS api_tokens ("
    " token_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, scopes TEXT NOT NULL,"
    " created_at TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's organisation and scopes."""

    org_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Create and verify tokens (SQLite file in the data dir, or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute(DDL)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        return cls(Database.from_settings(settings, settings.tokens_db_path))

    def close(self) -> None:
        self.db.close()

    def create(self, org_id: str, scopes: tuple[str, ...] | list[str]) -> str:
        """A new token for `org_id` with `scopes`; only its hash is kept."""
        if not org_id or len(org_id) > 100:
            raise ValueError("org must be 1–100 characters")
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise ValueError(f"unknown scopes {sorted(unknown)}; choose from {SCOPES}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO api_tokens (token_hash, org_id, scopes, created_at) VALUES (?,?,?,?)",
                (
                    hash_token(token),
                    org_id,
                    ",".join(sorted(set(scopes))),
                    datetime.now(UTC).isoformat(),
                ),
            )
        return token

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid token, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        with self.db.transaction(write=False) as cur:
            row = cur.execute(
                "SELECT token_hash, org_id, scopes FROM api_tokens WHERE token_hash = ?",
                (digest,),
            ).fetchone()
        if row is None or not hmac.compare_digest(str(row[0]), digest):
            return None
        principal = Principal(org_id=str(row[1]), scopes=frozenset(str(row[2]).split(",")))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

"""Whether an event store exists where the settings point, found without opening it:
opening creates one, and a command pointed at a mistyped OKR_DATA_DIR (an audit, a replay)
must say there is none rather than find an empty store there."""

from __future__ import annotations

import sqlite3

import psycopg

from services.eventstore.store import EVENTS_TABLE, StoreUnavailableError
from services.projectionstore.db import postgres_schema_missing, postgres_unreachable
from services.settings import Settings


def store_missing(settings: Settings) -> str | None:
    """Why there is no event store where `settings` point (a one-line message), else None.

    Looked up without opening the store, which would create one: an audit of a mistyped
    OKR_DATA_DIR must not find an empty store there and call it intact. StoreUnavailableError
    when PostgreSQL cannot be asked."""
    if settings.uses_postgres:
        return _postgres_store_missing(settings)
    path = settings.events_db_path
    where = f"{settings.data_dir.resolve()}"
    if not path.is_file():
        return (
            f"there is no event store in {where} (no {path.name}): check OKR_DATA_DIR "
            "(or set OKR_DATABASE_URL for a store on PostgreSQL)"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (EVENTS_TABLE,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot read {path.resolve()}: {exc}") from None
    if found is None:
        return f"{path.resolve()} is not an event store (it has no {EVENTS_TABLE} table)"
    return None


def _postgres_store_missing(settings: Settings) -> str | None:
    pg = settings.postgres
    conninfo = pg.conninfo()
    try:
        with psycopg.connect(conninfo, connect_timeout=5, autocommit=True) as conn:
            missing = postgres_schema_missing(conn, conninfo)
            if missing is not None:
                return missing
            table = f'"{pg.schema}"."{EVENTS_TABLE}"'
            row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    except psycopg.Error:
        raise StoreUnavailableError(postgres_unreachable(conninfo)) from None
    if row is None or row[0] is None:
        return (
            f"there is no event store in PostgreSQL at {pg.host}:{pg.port}/{pg.dbname} "
            f"schema {pg.schema!r} (no {EVENTS_TABLE} table): check OKR_DATABASE_URL"
        )
    return None

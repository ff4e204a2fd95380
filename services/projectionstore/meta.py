"""Which generation of the projection tables is live, and the writers' lock.

`projection_meta` rows: ("generation", N) names the live `Tables(N)`; ("schema_version", V)
says which PROJECTION_SCHEMA_VERSION built it; (`links_key(Tables(N))`, token) per
generation. Every projection write transaction takes `write_lock` first, so writers
(processor workers, the replay's final catch-up and swap) are serialised and always see
the generation that is live when they hold the lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.projectionstore.db import Cursor, Database
from services.projectionstore.schema import (
    HELD_TABLE,
    META_DDL,
    META_TABLE,
    PROJECTION_SCHEMA_VERSION,
    Tables,
    held_ddl,
)

# An arbitrary constant: the advisory lock key of projection writers on PostgreSQL.
_PG_LOCK_KEY = 0x6F6B7273  # "okrs"


def write_lock(cur: Cursor) -> None:
    """Serialise projection writers until the end of the transaction.

    SQLite's BEGIN IMMEDIATE already holds the database's write lock; PostgreSQL takes a
    transaction-scoped advisory lock.
    """
    if cur.dialect == "postgres":
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))


def read_meta(cur: Cursor, key: str) -> str | None:
    row = cur.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(cur: Cursor, key: str, value: str) -> None:
    cur.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def live_generation(cur: Cursor) -> int:
    """The live generation (1 before anything was written)."""
    value = read_meta(cur, "generation")
    return 1 if value is None else int(value)


def swap_mark_key(tables: Tables) -> str:
    """The projection_meta key of the `changes` seq a generation had when a replay's swap
    made it live (before the changes the swap itself told: the detections it reconciled).
    A change feed that followed the generation before starts there, not at the head."""
    return f"swap_mark:{tables.generation}"


def links_key(tables: Tables) -> str:
    """The projection_meta key of a generation's links token: it changes in every
    transaction that applies goal events to that generation's objectives (which may link,
    unlink or re-period key results), so each processor worker knows when its map of the
    objectives measuring each KPI is out of date. One per generation: a replay building the
    next one never contends with the live workers for it."""
    return f"links_token:g{tables.generation}"


def create_tables(cur: Cursor, tables: Tables) -> None:
    for statement in tables.ddl(cur.dialect):
        cur.execute(statement)


def existing_tables(cur: Cursor, names: Sequence[str]) -> set[str]:
    """Which of these tables exist (a generation built by an older schema may lack some)."""
    if cur.dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        query = (
            "SELECT table_name FROM information_schema.tables WHERE table_name = ?"
            " AND table_schema = current_schema()"
        )
    return {name for name in names if cur.execute(query, (name,)).fetchone() is not None}


def table_columns(cur: Cursor, table: str) -> list[str]:
    """The columns of `table`, in order (none when it does not exist)."""
    if cur.dialect == "sqlite":
        return [str(r[1]) for r in cur.execute(f"PRAGMA table_info({table})").fetchall()]
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
            " AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    ]


def drop_tables(cur: Cursor, tables: Tables) -> None:
    """Drop a generation's tables and its projection_meta rows (its links token)."""
    for name in tables.all():
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(
        f"DELETE FROM {META_TABLE} WHERE key IN (?, ?)",
        (links_key(tables), swap_mark_key(tables)),
    )


def ensure_schema(db: Database) -> tuple[int, int]:
    """Create projection_meta and the live generation's tables when missing.

    Returns (live generation, schema version that built it). A fresh store is stamped with
    the current PROJECTION_SCHEMA_VERSION.
    """
    with db.transaction() as cur:
        write_lock(cur)  # first: concurrent CREATE TABLE IF NOT EXISTS races on PostgreSQL
        cur.execute(META_DDL)
        for statement in held_ddl(cur.dialect):
            cur.execute(statement)
        if "claimed_until" not in table_columns(cur, HELD_TABLE):  # written before it
            cur.execute(f"ALTER TABLE {HELD_TABLE} ADD COLUMN claimed_until TEXT")
        generation = live_generation(cur)
        stored = read_meta(cur, "schema_version")
        if stored is None:
            write_meta(cur, "generation", str(generation))
            write_meta(cur, "schema_version", str(PROJECTION_SCHEMA_VERSION))
            stored = str(PROJECTION_SCHEMA_VERSION)
        if int(stored) == PROJECTION_SCHEMA_VERSION:
            create_tables(cur, Tables(generation))
        return generation, int(stored)

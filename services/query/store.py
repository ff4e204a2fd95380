"""Read access to the projection store: the live generation, applied position, org-scoped rows.

Every method takes the caller's organisation and never returns another organisation's rows.
Missing tables (the processor has not created them yet) read as empty, not as errors.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from services.projectionstore.db import Cursor, Database, DatabaseUnavailableError
from services.projectionstore.positions import applied_position
from services.projectionstore.schema import META_TABLE, Tables

GENERATION_TTL_S = 1.0
Row = tuple[Any, ...]


def _missing_table(exc: BaseException) -> bool:
    text = str(exc)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return True
    return isinstance(exc, sqlite3.OperationalError | DatabaseUnavailableError) and (
        "no such table" in text
    )


class ReadStore:
    """The query service's view of the projection store."""

    def __init__(self, db: Database, partitions: int) -> None:
        self.db = db
        self.partitions = partitions
        self._generation: tuple[float, int] | None = None
        self._lock = threading.Lock()

    # -- generation and position ----------------------------------------------------------

    def _read_generation(self) -> int:
        try:
            with self.db.transaction(write=False) as cur:
                row = cur.execute(
                    f"SELECT value FROM {META_TABLE} WHERE key = ?", ("generation",)
                ).fetchone()
        except Exception as exc:
            if _missing_table(exc):
                return 1
            raise
        return int(row[0]) if row is not None else 1

    def tables(self) -> Tables:
        """The live generation's tables (re-read at most every GENERATION_TTL_S seconds)."""
        now = time.monotonic()
        cached = self._generation
        if cached is not None and now - cached[0] < GENERATION_TTL_S:
            return Tables(cached[1])
        generation = self._read_generation()
        with self._lock:
            self._generation = (now, generation)
        return Tables(generation)

    @contextmanager
    def reading(self) -> Iterator[tuple[Cursor, Tables]]:
        """A read transaction over the live generation's tables."""
        tables = self.tables()
        with self.db.transaction(write=False) as cur:
            yield cur, tables

    def position(self, cur: Cursor, tables: Tables) -> int:
        """The processor's applied position (0 before it reported on every partition)."""
        try:
            return applied_position(cur, tables, self.partitions)
        except Exception as exc:
            if _missing_table(exc):
                return 0
            raise

    def current_position(self) -> int:
        with self.reading() as (cur, tables):
            return self.position(cur, tables)

    # -- queries ------------------------------------------------------------------------

    @staticmethod
    def rows(cur: Cursor, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """All rows of `sql`; [] when the table does not exist yet."""
        try:
            return cur.execute(sql, params).fetchall()
        except Exception as exc:
            if _missing_table(exc):
                if cur.dialect == "postgres":
                    # The failed statement aborted the transaction: start it over.
                    cur.execute("ROLLBACK")
                    cur.execute("BEGIN")
                return []
            raise

    @classmethod
    def one(cls, cur: Cursor, sql: str, params: Sequence[Any] = ()) -> Row | None:
        found = cls.rows(cur, sql, params)
        return found[0] if found else None

"""Read access to the projection store: the live generation, applied position, org-scoped rows.

Every method takes the caller's organisation and never returns another organisation's rows.

The live generation is read in the same read transaction as the data, so a replay's swap
(which makes generation g+1 live, then drops generation g's tables) never sends a read to
tables its snapshot lacks on SQLite. PostgreSQL's catalog is not part of the snapshot: a
read may find the tables of the generation it started with dropped under it. Then the
generation is read again, and when it moved the read raises `GenerationMovedError` and
`ReadStore.read` runs it again over the new generation. A missing table reads as empty only
when the generation did not move: nothing was created yet (no generation, or the processor
has not created that table), not when a swap dropped it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from services.projectionstore.db import Cursor, Database, DatabaseUnavailableError
from services.projectionstore.positions import applied_position
from services.projectionstore.schema import META_TABLE, Tables

READ_ATTEMPTS = 3
Row = tuple[Any, ...]
T = TypeVar("T")


class GenerationMovedError(Exception):
    """A replay's swap made another generation live, and dropped the tables, during a read."""


def _missing_table(exc: BaseException) -> bool:
    text = str(exc)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return True
    return isinstance(exc, sqlite3.OperationalError | DatabaseUnavailableError) and (
        "no such table" in text
    )


def _restart(cur: Cursor) -> None:
    """After a failed statement: PostgreSQL aborted the transaction, so roll it back; the
    next statement starts another (psycopg begins it, at the connection's isolation level)
    seeing the latest commits. SQLite's goes on in its snapshot."""
    if cur.dialect == "postgres":
        cur.execute("ROLLBACK")


class ReadStore:
    """The query service's view of the projection store."""

    def __init__(self, db: Database, partitions: int) -> None:
        self.db = db
        self.partitions = partitions

    # -- generation and position ----------------------------------------------------------

    @staticmethod
    def generation(cur: Cursor) -> int | None:
        """The live generation as `cur`'s transaction sees it; None before there is one."""
        try:
            row = cur.execute(
                f"SELECT value FROM {META_TABLE} WHERE key = ?", ("generation",)
            ).fetchone()
        except Exception as exc:
            if _missing_table(exc):
                _restart(cur)
                return None
            raise
        return int(row[0]) if row is not None else None

    @contextmanager
    def reading(self) -> Iterator[tuple[Cursor, Tables]]:
        """A read transaction and the tables of the generation live in it."""
        with self.db.transaction(write=False) as cur:
            yield cur, Tables(self.generation(cur) or 1)

    def read(self, fn: Callable[[Cursor, Tables], T]) -> T:
        """`fn` over one read transaction (`reading`); run again over the new generation
        when a swap moved it during the read. GenerationMovedError after READ_ATTEMPTS."""
        for attempt in range(READ_ATTEMPTS):
            try:
                with self.reading() as (cur, tables):
                    return fn(cur, tables)
            except GenerationMovedError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def position(self, cur: Cursor, tables: Tables) -> int:
        """The processor's applied position (0 before it reported on every partition)."""
        try:
            return applied_position(cur, tables, self.partitions)
        except Exception as exc:
            if _missing_table(exc):
                self._missing(cur, tables.generation)
                return 0
            raise

    def current_position(self) -> int:
        return self.read(self.position)

    # -- queries ------------------------------------------------------------------------

    @classmethod
    def _missing(cls, cur: Cursor, generation: int | None) -> None:
        """A table was missing: GenerationMovedError when the live generation is no longer
        `generation` (a swap dropped it); otherwise the table is not created yet."""
        _restart(cur)
        if generation is None:
            return
        live = cls.generation(cur)
        if live is not None and live != generation:
            raise GenerationMovedError(f"generation {generation} is no longer live ({live} is)")

    @classmethod
    def rows(
        cls, cur: Cursor, sql: str, params: Sequence[Any] = (), generation: int | None = None
    ) -> list[Row]:
        """All rows of `sql` over `generation`'s tables; [] when the table does not exist
        yet, GenerationMovedError when a swap dropped it (see `_missing`)."""
        try:
            return cur.execute(sql, params).fetchall()
        except Exception as exc:
            if _missing_table(exc):
                cls._missing(cur, generation)
                return []
            raise

    @classmethod
    def one(
        cls, cur: Cursor, sql: str, params: Sequence[Any] = (), generation: int | None = None
    ) -> Row | None:
        found = cls.rows(cur, sql, params, generation)
        return found[0] if found else None

"""A small SQL adapter over sqlite3 and psycopg: one transaction API, `?` placeholders.

SQL is written once in the dialect both engines share (ON CONFLICT upserts, TEXT ISO-8601
UTC timestamps that sort chronologically, DOUBLE PRECISION, BIGINT). For PostgreSQL `?` is
rewritten to `%s`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from services.settings import Settings

Dialect = Literal["sqlite", "postgres"]
Params = Sequence[Any]

log = logging.getLogger(__name__)

CHECKPOINT_S = 1.0  # how often a writer's WAL is copied into the database file


def _use_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Put the file in WAL mode unless it is. WAL is a property of the file: set once, and
    only read afterwards, so that a new connection still opens (for reads) on a full or
    read-only disk. Processes opening a new file together race to switch it, and SQLite
    answers "database is locked" at once to all but one (its busy handler cannot wait out
    two lock upgrades): retried until the switch is made, by whoever."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _Checkpointer:
    """Copies a writer's WAL into the database file from a thread and connection of its
    own, every `every_s` seconds (PASSIVE: never waits for the writer or the readers).

    SQLite otherwise checkpoints inside the COMMIT that crosses wal_autocheckpoint, on the
    writer's thread: thousands of pages copied and synced while the writer waits. Here the
    copy runs while the writer goes on (sqlite releases the GIL), on another core when
    there is one, and the commit that reaches wal_autocheckpoint finds most frames copied
    already."""

    def __init__(self, path: Path, every_s: float = CHECKPOINT_S) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(path, every_s), name="sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path, every_s: float) -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(every_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # a full disk, say: the writer reports it
                    log.warning("WAL checkpoint of %s failed: %s", path, exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class DatabaseUnavailableError(Exception):
    """The store cannot be reached or written (unreachable, disk full, read-only)."""


def _postgres_target(conninfo: str) -> str:
    where = conninfo_to_dict(conninfo)
    return f"{where.get('host', '?')}:{where.get('port', 5432)}/{where.get('dbname', '?')}"


def postgres_schema_missing(conn: psycopg.Connection[Any], conninfo: str) -> str | None:
    """A one-line message when the schema `conninfo` selects (its `-c search_path=` option,
    from OKR_DATABASE_URL's ?schema=) does not exist in the database; else None."""
    options = str(conninfo_to_dict(conninfo).get("options") or "")
    found = re.search(r"search_path=(\S+)", options)
    if found is None:
        return None
    schema = found.group(1)
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if row is not None:
        return None
    return (
        f"PostgreSQL at {_postgres_target(conninfo)} has no schema {schema!r} "
        "(create it, or name another with ?schema= in OKR_DATABASE_URL)"
    )


# What an unreachable database's message says when waiting cannot help: the URL names a
# database, role or schema that does not exist, or credentials the server refuses.
_LASTING = (
    "does not exist",
    "password authentication failed",
    "no pg_hba.conf entry",
    "has no schema",
)


def lasting(reason: str) -> bool:
    """Whether a store's unavailability (its message) is a misconfiguration, which waiting
    will not cure, rather than an outage: a process waiting at start-up exits instead."""
    return any(marker in reason for marker in _LASTING)


def postgres_unreachable(conninfo: str) -> str:
    """A one-line reason why PostgreSQL at `conninfo` cannot be used (never the password)."""
    try:
        with psycopg.connect(conninfo, connect_timeout=3, autocommit=True) as conn:
            missing = postgres_schema_missing(conn, conninfo)
        if missing is not None:
            return missing
        reason = "connections time out"
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    target = _postgres_target(conninfo)
    return f"PostgreSQL at {target} is unreachable: {reason} (check OKR_DATABASE_URL)"


class Cursor:
    """The one cursor type the stores use, whatever the engine."""

    # What a violated unique/primary key raises, on either engine.
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
    # What the engine raises when it cannot be used (Database.transaction turns these into
    # DatabaseUnavailableError).
    unavailable_errors: tuple[type[Exception], ...] = (
        sqlite3.OperationalError,
        psycopg.OperationalError,
    )

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self._raw = raw
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        self._raw.execute(self._sql(sql), params)
        return self

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self._raw.executemany(self._sql(sql), rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._raw.fetchone()
        return tuple(row) if row is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._raw.fetchall()  # tuples from either engine
        return rows

    @property
    def rowcount(self) -> int:
        return int(self._raw.rowcount)


class Database:
    """Connections to the projection store (or any okrstream-owned SQL store)."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        path: Path | None = None,
        conninfo: str = "",
        sqlite_cache_kib: int | None = None,
    ) -> None:
        self.dialect: Dialect = dialect
        self._path = path
        # SQLite's page cache per connection (default ~2 MiB); a writer of big indexed
        # tables (the processor) re-reads far fewer pages with a bigger one. Given for the
        # writers only (whose WAL is then checkpointed by a _Checkpointer).
        self._cache_kib = sqlite_cache_kib
        self._checkpointer: _Checkpointer | None = None
        self._local = threading.local()
        self._pool: ConnectionPool[Any] | None = None
        if dialect == "postgres":
            self._pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=10,
                kwargs={"autocommit": False, "row_factory": tuple_row},
                timeout=10,
                open=True,
                configure=self._configure_pg,
                # A connection the server ended (a restart, a failover, an idle timeout) is
                # found at checkout and replaced, instead of failing the request it serves.
                check=ConnectionPool.check_connection,
            )
            try:
                self._pool.wait(timeout=10)
            except PoolTimeout:
                self._pool.close()
                raise DatabaseUnavailableError(postgres_unreachable(conninfo)) from None
            # Without its schema every statement fails later, less clearly: say so now.
            try:
                with self._pool.connection() as conn:
                    missing = postgres_schema_missing(conn, conninfo)
            except psycopg.Error:
                missing = postgres_unreachable(conninfo)
            if missing is not None:
                self._pool.close()
                raise DatabaseUnavailableError(missing)

    @staticmethod
    def _configure_pg(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET statement_timeout = '30s'")
        conn.commit()

    @classmethod
    def from_settings(
        cls, settings: Settings, sqlite_file: Path, *, sqlite_cache_kib: int | None = None
    ) -> Database:
        """PostgreSQL when OKR_DATABASE_URL is set, else the SQLite file `sqlite_file`."""
        if settings.uses_postgres:
            return cls("postgres", conninfo=settings.postgres.conninfo())
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        return cls("sqlite", path=sqlite_file, sqlite_cache_kib=sqlite_cache_kib)

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self._path is not None
            conn = sqlite3.connect(
                self._path, timeout=30, isolation_level=None, check_same_thread=False
            )
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            if self._cache_kib:
                conn.execute(f"PRAGMA cache_size=-{int(self._cache_kib)}")
                # A writer's WAL is checkpointed beside it (_Checkpointer), and in the commit
                # that crosses 10,000 pages (default 1,000), which then has little left to
                # copy: that commit is what starts the WAL over while the writer is busy.
                conn.execute("PRAGMA wal_autocheckpoint=10000")
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self._path)
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Cursor]:
        """One transaction: committed on success, rolled back on error.

        SQLite write transactions take the write lock up front (BEGIN IMMEDIATE), so
        read-then-write sequences inside never interleave with another writer. A read
        (`write=False`) sees one snapshot of the database on either engine.
        """
        try:
            if self.dialect == "sqlite":
                conn = self._sqlite()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield Cursor(conn.cursor(), "sqlite")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                else:
                    conn.execute("COMMIT" if write else "ROLLBACK")
            else:
                assert self._pool is not None
                # The pool commits on a clean exit and rolls back on an exception.
                with self._pool.connection() as pg:
                    # A read sees one snapshot, as SQLite's does: under PostgreSQL's
                    # default (READ COMMITTED) each statement sees the latest commit, so a
                    # view read in several statements could mix two processor commits
                    # (an objective's score from one, its key results from the next).
                    pg.isolation_level = None if write else psycopg.IsolationLevel.REPEATABLE_READ
                    with pg.cursor() as cur:
                        yield Cursor(cur, "postgres")
        except Cursor.unavailable_errors as exc:
            raise DatabaseUnavailableError(str(exc)) from exc

    @contextmanager
    def exclusive(self, name: str, poll_s: float = 0.2) -> Iterator[None]:
        """Hold the lock `name` across processes while the block runs (one rebuild of the
        projections at a time): a lock file beside the SQLite file, or a PostgreSQL
        session advisory lock (polled: a wait must not run into statement_timeout)."""
        if self.dialect == "sqlite":
            assert self._path is not None
            with open(self._path.with_name(f"{self._path.name}.{name}.lock"), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return
        assert self._pool is not None
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                    time.sleep(poll_s)
                try:
                    yield
                finally:
                    # A lost connection took the lock with it; its error must not hide the
                    # block's own.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.autocommit = False

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._pool is not None:
            self._pool.close()

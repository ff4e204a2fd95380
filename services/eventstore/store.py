"""Append-only event storage on eventsourcing's application recorder.

Events map to eventsourcing's StoredEvent with originator_id = stream_id, originator_version
= stream_version, topic = the event's stable type name (never a Python path) and state =
the event's canonical JSON. The recorder's notification id is okrstream's global position.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import psycopg.errors
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteFactory

import events
from events.hashing import LOG_GENESIS, LogEntry, LogSeal, next_seal
from services.projectionstore.db import postgres_unreachable
from services.settings import Settings

EVENTS_TABLE = "stored_events"
SEALS_TABLE = "log_seals"  # tamper evidence of the whole log (events/hashing.py)
SEAL_LOCK_TIMEOUT_S = 5  # PostgreSQL: longest wait for the writers' lock to seal
SERIALISED_WAIT_S = 10  # longest wait for a `serialised` lock before giving up (503)
SQLITE_CHUNK = 2_000  # rows per INSERT statement (4 variables each; SQLite allows 32,766)

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _sqlite_insert(count: int) -> str:
    return (
        f"INSERT OR IGNORE INTO {EVENTS_TABLE} "
        "(originator_id, originator_version, topic, state) VALUES "
        + ",".join(["(?,?,?,?)"] * count)
        + " RETURNING originator_id, originator_version, rowid"
    )


# Per SQLite connection. Bulk readings dirty about one index page per reading (stream ids are
# uniformly spread), so with the default 1,000-page auto-checkpoint every 1,000-reading commit
# also checkpointed the WAL into the database file; a larger checkpoint interval writes each
# hot page once per several commits, and a 64 MiB page cache keeps the index in memory.
# Durability is unchanged: synchronous stays FULL, so each commit's WAL is fsynced before
# the answer.
SQLITE_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=10000")


def _tune_sqlite(recorder: SQLiteApplicationRecorder) -> None:
    """Apply SQLITE_PRAGMAS to the pool's connections, current and future."""
    pool: Any = recorder.datastore.pool
    create = pool._create_connection

    def tuned() -> Any:
        conn = create()
        for pragma in SQLITE_PRAGMAS:
            conn._sqlite_conn.execute(pragma)
        return conn

    pool._create_connection = tuned
    for conn in list(pool._pool):
        for pragma in SQLITE_PRAGMAS:
            conn._sqlite_conn.execute(pragma)


class WriterLock:
    """One SQLite writer at a time across threads and processes, waiting in the kernel.

    SQLite's own busy handler polls with sleeps of up to 100 ms, so two front door processes
    writing 1,000-reading batches left the file idle between commits; an exclusive flock on
    a side file hands the write over the moment it is released. SQLite's locking still
    guards the data (this only orders the writers); the lock dies with its process. With
    no path (an in-memory database, one process) only the threads are ordered."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._thread = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> None:
        self.enter_unless(lambda: False)

    def enter_unless(self, done: Callable[[], bool]) -> bool:
        """Take the lock, unless `done()` holds once this process's turn has come: then
        return False holding nothing (another thread did the work meanwhile)."""
        self._thread.acquire()
        try:
            if done():
                self._thread.release()
                return False
            if self.path is not None:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the lock up (taken by `with` or by enter_unless returning True)."""
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def close(self) -> None:
        with self._thread:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


EncodedRow = tuple[str, int, str, bytes]  # stream id (32 hex digits), version, type, JSON


@dataclass(slots=True, eq=False)
class _Waiting:
    """One caller's rows waiting for a group commit, and what became of them."""

    rows: list[EncodedRow]
    positions: list[int | None] | None = None
    error: str | None = None

    def settled(self) -> bool:
        return self.positions is not None or self.error is not None


class ConcurrencyError(Exception):
    """Another writer appended to the stream first (optimistic concurrency)."""


class StoreUnavailableError(Exception):
    """The store cannot take writes right now (disk full, read-only, unreachable)."""


class StoredNotification(NamedTuple):
    """One entry of the notification log: the global position and the stored event. (A
    named tuple built straight from the row: the relay reads tens of thousands a second.)"""

    position: int
    stream_hex: str  # the stream id as 32 hex digits, as stored
    stream_version: int
    type: str
    state: bytes

    @property
    def stream_id(self) -> UUID:
        return UUID(hex=self.stream_hex)

    def decode(self) -> events.Event:
        return events.decode(self.state)


def to_stored(event: events.Event) -> StoredEvent:
    """The eventsourcing StoredEvent of an okrstream event."""
    return StoredEvent(
        originator_id=event.stream_id,
        originator_version=event.stream_version,
        topic=event.type,
        state=events.encode(event),
    )


def _inserted_entries(
    group: list[_Waiting], found: list[dict[tuple[str, int], int]]
) -> list[LogEntry]:
    """The log entries a group commit inserted, in position order: each row that came back
    with a rowid, its first occurrence (the one INSERT OR IGNORE stored)."""
    entries: dict[int, LogEntry] = {}
    for waiting, inserted in zip(group, found, strict=True):
        for stream_id, version, topic, state in waiting.rows:
            position = inserted.get((stream_id, version))
            if position is not None and position not in entries:
                entries[position] = (position, stream_id, version, topic, state)
    return [entries[p] for p in sorted(entries)]


class EventStore:
    """okrstream events on SQLite (a file in the data dir) or PostgreSQL."""

    def __init__(self, factory: SQLiteFactory | PostgresFactory) -> None:
        self._factory = factory
        recorder: ApplicationRecorder = factory.application_recorder()
        self.recorder = recorder
        self.is_postgres = isinstance(recorder, PostgresApplicationRecorder)
        self._writer = WriterLock(None)
        self._serial = WriterLock(None)  # `serialised` on SQLite
        self._serial_threads = threading.Lock()  # `serialised` on PostgreSQL, in-process part
        self._waiting: list[_Waiting] = []  # readings batches for the next group commit
        self._waiting_lock = threading.Lock()
        if isinstance(recorder, SQLiteApplicationRecorder):
            _tune_sqlite(recorder)
            pool: Any = recorder.datastore.pool
            if not pool.is_sqlite_memory_mode:
                self._writer = WriterLock(Path(pool.db_name + "-writer.lock"))
                self._serial = WriterLock(Path(pool.db_name + "-serialised.lock"))

    @classmethod
    def from_settings(cls, settings: Settings) -> EventStore:
        """Open (and create if needed) the store the settings name."""
        env: dict[str, str] = {"CREATE_TABLE": "y"}
        if settings.uses_postgres:
            pg = settings.postgres
            env |= {
                "POSTGRES_DBNAME": pg.dbname,
                "POSTGRES_HOST": pg.host,
                "POSTGRES_PORT": str(pg.port),
                "POSTGRES_USER": pg.user,
                "POSTGRES_PASSWORD": pg.password,
                "POSTGRES_SCHEMA": pg.schema,
                "POSTGRES_CONNECT_TIMEOUT": "5",
                "POSTGRES_LOCK_TIMEOUT": "5",
                "POSTGRES_POOL_SIZE": "5",
                "POSTGRES_MAX_OVERFLOW": "10",
                "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            }
            factory = PostgresFactory(env)
            try:
                # Connects (and creates the table) now: fail at start-up, clearly, rather
                # than on the first request.
                return cls(factory)
            except (OperationalError, PersistenceError):
                # Closed here: left to the garbage collector, the datastore's pool may be
                # closed from one of its own threads, which cannot join itself.
                factory.close()
                raise StoreUnavailableError(postgres_unreachable(pg.conninfo())) from None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env |= {"SQLITE_DBNAME": str(settings.events_db_path), "SQLITE_LOCK_TIMEOUT": "10"}
        return cls(SQLiteFactory(env))

    def close(self) -> None:
        self._factory.close()
        self._writer.close()
        self._serial.close()

    # -- locks -----------------------------------------------------------------------------

    @contextmanager
    def serialised(self, name: str) -> Iterator[None]:
        """Run the block while holding the lock `name`, across threads and processes.

        For a check that reads other streams than the one its command appends to (which
        optimistic concurrency cannot see): every writer whose check could conflict takes
        the same lock around its read, check and append. On PostgreSQL a session advisory
        lock per name (released with the session if the process dies), and
        StoreUnavailableError after waiting SERIALISED_WAIT_S; on SQLite, which has one
        writer at a time anyway, one flock on a side file for all names, waited for as the
        writers' lock is (its holder is a short block, and the lock dies with its process).
        """
        if not self.is_postgres:
            with self._serial:
                yield
            return
        # One waiting or holding connection per process (whatever the name): threads queue
        # here without taking a pool connection, so the holder always finds one for its
        # reads and append. The blocks are short (a few reads and one append).
        if not self._serial_threads.acquire(timeout=SERIALISED_WAIT_S):
            raise StoreUnavailableError(f"timed out waiting for the lock {name!r}")
        try:
            with self._advisory_lock(name):
                yield
        finally:
            self._serial_threads.release()

    @contextmanager
    def _advisory_lock(self, name: str) -> Iterator[None]:
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        # Advisory locks are database-wide: the schema keeps two deployments (or test runs)
        # sharing a database from waiting on each other.
        scoped = f"{recorder.datastore.schema}\x00{name}".encode()
        key = int.from_bytes(hashlib.sha256(scoped).digest()[:8], "big", signed=True)
        failed_inside = False
        try:
            with recorder.datastore.get_connection() as conn:
                try:
                    # SET LOCAL bounds this wait only. The session lock outlives the
                    # transaction, so the connection is idle (not idle in a transaction)
                    # while the block works on other connections.
                    with conn.transaction():
                        conn.execute(f"SET LOCAL lock_timeout = '{SERIALISED_WAIT_S}s'")
                        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                except psycopg.errors.LockNotAvailable:
                    raise StoreUnavailableError(
                        f"timed out waiting for the lock {name!r}"
                    ) from None
                try:
                    yield
                except BaseException:
                    failed_inside = True
                    raise
                finally:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except psycopg.Error:
                        conn.close()  # the pool drops it; the session's end frees the lock
        except (OperationalError, PersistenceError) as exc:
            if failed_inside:  # the block's own error, not the lock's
                raise
            raise StoreUnavailableError(str(exc)) from exc

    # -- writing ---------------------------------------------------------------------------

    def append(self, new_events: Sequence[events.Event]) -> int:
        """Append events atomically (one or more streams); return the last global position.

        Raises ConcurrencyError when any (stream_id, stream_version) is already taken.
        """
        if not new_events:
            return self.max_position()
        try:
            stored = [to_stored(e) for e in new_events]
            with self._writer:
                self._ensure_seals()  # before the first entry: a new store is sealed from 0
                ids = self.recorder.insert_events(stored)
                self._seal_appended(ids)
        except IntegrityError as exc:
            raise ConcurrencyError(str(exc)) from exc
        except (OperationalError, PersistenceError) as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return max(ids) if ids else self.max_position()

    def append_new(self, new_events: Sequence[events.Event]) -> list[int | None]:
        """Insert each event unless its (stream_id, stream_version) exists; one transaction.

        Returns, per event, its global position, or None when it was already stored. Used for
        readings, whose stream id is derived from their reading id: a duplicate is skipped,
        never stored twice, and never fails the batch.
        """
        rows = [(e.stream_id, e.stream_version, e.type, events.encode(e)) for e in new_events]
        return self.append_new_encoded(rows)

    def append_new_encoded(
        self, rows: Sequence[tuple[UUID | str, int, str, bytes]]
    ) -> list[int | None]:
        """append_new for events already encoded: (stream_id as a UUID or 32 hex digits,
        stream_version, type, canonical JSON). The bulk-ingest path, which builds canonical
        bytes without pydantic models."""
        rows = list(rows)
        if not rows:
            return []
        try:
            if self.is_postgres:
                return self._append_new_postgres(
                    [(s if isinstance(s, UUID) else UUID(hex=s), v, t, b) for s, v, t, b in rows]
                )
            return self._append_new_sqlite(rows)
        except (OperationalError, PersistenceError, sqlite3.Error) as exc:
            raise StoreUnavailableError(str(exc)) from exc

    def _append_new_sqlite(
        self, rows: list[tuple[UUID | str, int, str, bytes]]
    ) -> list[int | None]:
        """Group commit: the batches of concurrent callers are inserted in one transaction
        and made durable by one commit (one WAL fsync) instead of one each.

        A caller queues its rows and waits for the writer lock; whoever gets it first writes
        every queued batch, and a caller whose batch was written meanwhile returns without
        touching the database. Each batch keeps its own answer (a row that another batch of
        the group inserted first is that batch's duplicate); when the transaction fails, no
        batch of the group is stored and each caller gets the error."""
        mine = _Waiting([(s if isinstance(s, str) else s.hex, v, t, b) for s, v, t, b in rows])
        with self._waiting_lock:
            self._waiting.append(mine)
        try:
            turn = self._writer.enter_unless(mine.settled)
        except BaseException:
            with self._waiting_lock:  # not written: a caller that gets an error wrote nothing
                if mine in self._waiting:
                    self._waiting.remove(mine)
            raise
        if turn:
            try:
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                self._commit_group(group)
            finally:
                self._writer.release()
        if mine.error is not None:
            raise StoreUnavailableError(mine.error)
        assert mine.positions is not None
        return mine.positions

    def _commit_group(self, group: list[_Waiting]) -> None:
        """Insert the batches of `group` in one transaction and settle each (writer lock
        held). Multi-row INSERT OR IGNORE … RETURNING, one statement per SQLITE_CHUNK rows:
        the rows that were inserted come back with their rowid (the position); the ignored
        ones are already stored."""
        assert isinstance(self.recorder, SQLiteApplicationRecorder)
        found: list[dict[tuple[str, int], int]] = []
        try:
            self._ensure_seals()
            with self.recorder.datastore.transaction(commit=True) as cursor:
                raw = cursor.sqlite_cursor
                for waiting in group:
                    inserted: dict[tuple[str, int], int] = {}
                    for start in range(0, len(waiting.rows), SQLITE_CHUNK):
                        chunk = waiting.rows[start : start + SQLITE_CHUNK]
                        raw.execute(_sqlite_insert(len(chunk)), [x for row in chunk for x in row])
                        for stream_id, version, position in raw.fetchall():
                            inserted[(stream_id, version)] = position
                    found.append(inserted)
                self._seal_sqlite(raw, _inserted_entries(group, found))
        except BaseException as exc:
            for waiting in group:
                waiting.error = str(exc) or type(exc).__name__
            if isinstance(exc, (OperationalError, PersistenceError, sqlite3.Error)):
                return
            raise
        for waiting, inserted in zip(group, found, strict=True):
            # pop: a row repeated within a batch is stored once; its repeats are duplicates
            waiting.positions = [inserted.pop((s, v), None) for s, v, _t, _b in waiting.rows]

    def _append_new_postgres(self, rows: list[tuple[UUID, int, str, bytes]]) -> list[int | None]:
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        schema = recorder.datastore.schema
        table = f'"{schema}"."{EVENTS_TABLE}"'
        positions: list[int | None] = []
        self._ensure_seals()
        with (
            recorder.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            # Same lock as the recorder's own inserts: positions commit in order, so the
            # relay never passes over a gap that fills in later.
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            for stream_id, version, topic, state in rows:
                cursor.execute(
                    f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING notification_id",
                    (stream_id, version, topic, state),
                )
                row: Any = cursor.fetchone()
                positions.append(row["notification_id"] if row else None)
            inserted = zip(rows, positions, strict=True)
            mine = [(p, s.hex, v, t, b) for (s, v, t, b), p in inserted if p is not None]
            self._seal_postgres(cursor, sorted(mine))
        return positions

    # -- reading ---------------------------------------------------------------------------

    def read_stream(
        self, stream_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> list[events.Event]:
        """The stream's events in order (stream_version > gt and ≤ lte when given)."""
        stored = self.recorder.select_events(stream_id, gt=gt, lte=lte)
        return [events.decode(s.state) for s in stored]

    def notifications(self, after: int, limit: int) -> list[StoredNotification]:
        """Up to `limit` entries of the notification log with position > `after`, in order.
        A store that cannot be read raises StoreUnavailableError (the relay retries)."""
        try:
            if not self.is_postgres:
                return self._notifications_sqlite(after, limit)
            found = self.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
        except (OperationalError, PersistenceError, sqlite3.OperationalError) as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return [
            StoredNotification(
                n.id, UUID(str(n.originator_id)).hex, n.originator_version, n.topic, n.state
            )
            for n in found
        ]

    def _notifications_sqlite(self, after: int, limit: int) -> list[StoredNotification]:
        """The recorder's select_notifications query, read as plain tuples (the relay's hot
        path: no sqlite3.Row and no intermediate Notification per entry)."""
        assert isinstance(self.recorder, SQLiteApplicationRecorder)
        with self.recorder.datastore.transaction(commit=False) as cursor:
            raw = cursor.sqlite_cursor
            raw.row_factory = None
            raw.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {EVENTS_TABLE} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
            rows = raw.fetchall()
        return list(map(StoredNotification._make, rows))

    def max_position(self) -> int:
        """The global position of the newest event (0 when the store is empty); raises
        StoreUnavailableError when the store cannot be read."""
        try:
            return self.recorder.max_notification_id() or 0
        except (OperationalError, PersistenceError, sqlite3.OperationalError) as exc:
            raise StoreUnavailableError(str(exc)) from exc

    def stream_heads(self, stream_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The newest version of each of these streams that has events (one indexed read
        per 500 ids); raises StoreUnavailableError when the store cannot be read."""
        heads: dict[UUID, int] = {}
        try:
            for at in range(0, len(stream_ids), 500):
                chunk = stream_ids[at : at + 500]
                if self.is_postgres:
                    recorder = self.recorder
                    assert isinstance(recorder, PostgresApplicationRecorder)
                    with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                        cursor.execute(
                            "SELECT originator_id, MAX(originator_version) AS v FROM"
                            f" {self._pg_name(EVENTS_TABLE)} WHERE originator_id = ANY(%s)"
                            " GROUP BY originator_id",
                            (list(chunk),),
                        )
                        for r in cursor.fetchall():
                            heads[UUID(str(r["originator_id"]))] = int(r["v"])
                    continue
                assert isinstance(self.recorder, SQLiteApplicationRecorder)
                with self.recorder.datastore.transaction(commit=False) as cursor:
                    cursor.execute(
                        f"SELECT originator_id, MAX(originator_version) FROM {EVENTS_TABLE}"
                        f" WHERE originator_id IN ({','.join('?' * len(chunk))})"
                        " GROUP BY originator_id",
                        [i.hex for i in chunk],
                    )
                    for r in cursor.fetchall():
                        heads[UUID(r[0])] = int(r[1])
        except (OperationalError, PersistenceError, sqlite3.OperationalError) as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return heads

    def stream_ids(self, after: UUID | None = None, limit: int = 1000) -> list[UUID]:
        """Distinct stream ids in order (for audits that walk every stream)."""
        if self.is_postgres:
            recorder = self.recorder
            assert isinstance(recorder, PostgresApplicationRecorder)
            table = f'"{recorder.datastore.schema}"."{EVENTS_TABLE}"'
            with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(
                    f"SELECT DISTINCT originator_id FROM {table} WHERE originator_id > %s "
                    "ORDER BY originator_id LIMIT %s",
                    (after or UUID(int=0), limit),
                )
                return [UUID(str(r["originator_id"])) for r in cursor.fetchall()]
        assert isinstance(self.recorder, SQLiteApplicationRecorder)
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT DISTINCT originator_id FROM {EVENTS_TABLE} WHERE originator_id > ? "
                "ORDER BY originator_id LIMIT ?",
                ((after or UUID(int=0)).hex, limit),
            )
            return [UUID(r[0]) for r in cursor.fetchall()]

    # -- log seals: tamper evidence of the whole log (the scheme: events/hashing.py) ----------
    # Every write transaction ends by sealing the entries after the newest seal, holding the
    # writers' lock (so no entry can commit below them later). Per batch: one read of the
    # newest seal, one insert, and a read of entries only when other writers' lie between
    # the seal and this transaction's own (a command's append, which eventsourcing commits on
    # its own, is sealed right after in a transaction of its own: _seal_appended). Every
    # writer must hold that lock: the relay's ordering relies on it too.

    _seals_ready = False  # this store has made sure the seals table exists

    def _pg_name(self, table: str) -> str:
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        return f'"{recorder.datastore.schema}"."{table}"'

    @contextmanager
    def _pg_locked(self) -> Iterator[Any]:
        """A PostgreSQL transaction holding the writers' lock (LOCK TABLE … IN EXCLUSIVE
        MODE on the events table, as every insert takes it), waiting SEAL_LOCK_TIMEOUT_S at
        most."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{SEAL_LOCK_TIMEOUT_S}s'")
            cursor.execute(f"LOCK TABLE {self._pg_name(EVENTS_TABLE)} IN EXCLUSIVE MODE")
            yield cursor

    def _ensure_seals(self) -> None:
        """Create the seals table on this store's first write (an older release's store has
        none), in a transaction of its own: before, never inside, a write transaction."""
        if self._seals_ready:
            return
        if self.is_postgres:
            # Under the writers' lock: two processes creating it at once would collide.
            with self._pg_locked() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._pg_name(SEALS_TABLE)} "
                    "(position bigint PRIMARY KEY, digest text NOT NULL, base bigint NOT NULL)"
                )
                cursor.execute(self._genesis_sql("%s"), (LOG_GENESIS,))
        else:
            assert isinstance(self.recorder, SQLiteApplicationRecorder)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {SEALS_TABLE} "
                    "(position INTEGER PRIMARY KEY, digest TEXT NOT NULL, base INTEGER NOT NULL)"
                )
                cursor.execute(self._genesis_sql("?"), (LOG_GENESIS,))
        self._seals_ready = True

    def _genesis_sql(self, mark: str) -> str:
        """A store that starts empty gets the genesis seal (position 0, base 0), so every
        entry it will ever hold is anchored, whichever writer seals first (without it, a
        readings batch sealing first would leave a command's events committed just before
        it below the first seal's base for good). A store of an older release, which holds
        entries already, gets none: those stay unanchored."""
        seals = self._pg_name(SEALS_TABLE) if self.is_postgres else SEALS_TABLE
        log = self._pg_name(EVENTS_TABLE) if self.is_postgres else EVENTS_TABLE
        return (
            f"INSERT INTO {seals} (position, digest, base) SELECT 0, {mark}, 0"
            f" WHERE NOT EXISTS (SELECT 1 FROM {log}) AND NOT EXISTS (SELECT 1 FROM {seals})"
        )

    def _seal_sqlite(
        self, raw: sqlite3.Cursor, mine: list[LogEntry], first_new: int | None = None
    ) -> None:
        """`_seal` in the caller's SQLite write transaction (`raw` its cursor)."""
        raw.row_factory = None

        def query(sql: str, params: Sequence[Any]) -> list[Any]:
            return raw.execute(sql, params).fetchall()

        self._seal(query, "rowid", SEALS_TABLE, EVENTS_TABLE, mine, first_new)

    def _seal_postgres(
        self, cursor: Any, mine: list[LogEntry], first_new: int | None = None
    ) -> None:
        """`_seal` on PostgreSQL: `cursor` is in a transaction holding the writers' lock
        (LOCK TABLE … IN EXCLUSIVE MODE); its rows are dicts."""

        def query(sql: str, params: Sequence[Any]) -> list[Any]:
            cursor.execute(sql.replace("?", "%s"), params)
            if cursor.description is None:
                return []
            return [tuple(r.values()) for r in cursor.fetchall()]

        seals, log = self._pg_name(SEALS_TABLE), self._pg_name(EVENTS_TABLE)
        self._seal(query, "notification_id", seals, log, mine, first_new)

    @staticmethod
    def _seal(
        query: Callable[[str, Sequence[Any]], list[Any]],
        position: str,
        seals: str,
        log: str,
        mine: list[LogEntry],
        first_new: int | None,
    ) -> None:
        """Seal every entry after the newest seal, in the caller's write transaction.

        `mine`: the entries this transaction inserted, in position order (their bytes are at
        hand: only entries of other writers, between the newest seal and them, are read
        back). `first_new`: the lowest position inserted, when `mine` is not given; in a
        store without seals yet, the entries before it stay unanchored (the chain's base).
        `query` runs `?`-marked SQL and returns tuples; `position` names the log's position
        column, `seals` and `log` the tables."""
        found = query(
            f"SELECT position, digest, base FROM {seals} ORDER BY position DESC LIMIT 1", ()
        )
        last = LogSeal(*found[0]) if found else None
        if last is not None:
            after = last.position
        elif mine:
            after = mine[0][0] - 1
        elif first_new is not None:
            after = first_new - 1
        else:
            return
        between: list[LogEntry] = []
        if not mine or mine[0][0] > after + 1:
            between = [
                # The stream id as notifications() gives it (PostgreSQL: a UUID), the bytes
                # as stored (PostgreSQL: a memoryview).
                (p, UUID(str(stream)).hex, version, topic, bytes(state))
                for p, stream, version, topic, state in query(
                    f"SELECT {position}, originator_id, originator_version, topic, state"
                    f" FROM {log} WHERE {position} > ? AND {position} < ? ORDER BY {position}",
                    (after, mine[0][0] if mine else 2**63 - 1),
                )
            ]
        seal = next_seal(last, [*between, *mine], after)
        if seal is not None:
            query(
                f"INSERT INTO {seals} (position, digest, base) VALUES (?, ?, ?)",
                (seal.position, seal.digest, seal.base),
            )

    def _seal_appended(self, positions: Sequence[int] | None) -> None:
        """Seal after append(), whose events eventsourcing's recorder committed on its own.
        A failure is logged, not raised: the events are stored, and the next seal (any
        writer's) covers them; until then verify counts them as not sealed yet."""
        first_new = min(positions) if positions else None
        try:
            self._ensure_seals()
            if self.is_postgres:
                with self._pg_locked() as cursor:
                    self._seal_postgres(cursor, [], first_new)
            else:
                assert isinstance(self.recorder, SQLiteApplicationRecorder)
                with self.recorder.datastore.transaction(commit=True) as cursor:
                    self._seal_sqlite(cursor.sqlite_cursor, [], first_new)
        except Exception:
            _log.warning(
                "could not seal the log after an append; the next write will", exc_info=True
            )

    def _seals_exist(self) -> bool:
        if self.is_postgres:
            recorder = self.recorder
            assert isinstance(recorder, PostgresApplicationRecorder)
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute("SELECT to_regclass(%s) AS found", (self._pg_name(SEALS_TABLE),))
                row: Any = cursor.fetchone()
                return row["found"] is not None
        assert isinstance(self.recorder, SQLiteApplicationRecorder)
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SEALS_TABLE,)
            )
            return cursor.fetchone() is not None

    def log_seals(self, after: int = 0, limit: int = 1000) -> list[LogSeal]:
        """Up to `limit` seals with position > `after`, in order ([] when the store has
        none: an older release's store)."""
        return self._read_seals("WHERE position > ? ORDER BY position LIMIT ?", (after, limit))

    def newest_log_seal(self) -> LogSeal | None:
        """The seal with the highest position (None when the store has none)."""
        found = self._read_seals("ORDER BY position DESC LIMIT 1", ())
        return found[0] if found else None

    def _read_seals(self, clause: str, params: Sequence[Any]) -> list[LogSeal]:
        """The seals `SELECT … FROM log_seals {clause}` (`?`-marked) finds, on either
        engine; [] when the store has no seals table."""
        if not self._seals_exist():
            return []
        if self.is_postgres:
            recorder = self.recorder
            assert isinstance(recorder, PostgresApplicationRecorder)
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT position, digest, base FROM {self._pg_name(SEALS_TABLE)} "
                    + clause.replace("?", "%s"),
                    params,
                )
                return [LogSeal(r["position"], r["digest"], r["base"]) for r in cursor.fetchall()]
        assert isinstance(self.recorder, SQLiteApplicationRecorder)
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT position, digest, base FROM {SEALS_TABLE} {clause}", params)
            return [LogSeal(r[0], r[1], r[2]) for r in cursor.fetchall()]

"""`okrstream replay`: rebuild every projection from the event store's log into a fresh
generation and swap it in atomically while the API keeps serving the old one.

The build reads the notification log directly (no Kafka) and applies it with the same
Projector the live agents use. Readings produced straight to okr.kpi-readings.v1 (by
integrations, or by ingest with OKR_INGEST_MODE=kafka) are not in the log: their one
durable copy besides Kafka's retention is the live generation's readings table, so the
build carries over every reading that table holds and the log does not (each with its
event id, which is derived from (org, KPI, reading id) as ingest derives it). The last step
runs in one transaction holding the projection writers' lock (the live processor waits):
catch up to the log's end and with the readings applied live meanwhile, copy the
watermarks and the live processor's deferred re-evaluations, switch projection_meta to the
new generation. The old tables are dropped after.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import orjson

import events
from contracts.readings import reading_stream_id
from services.eventstore.store import EventStore, StoredNotification
from services.processor.projector import Projector, Tx
from services.processor.records import (
    GoalItem,
    Notice,
    ReadingRow,
    keep_latest,
    reading_from_event_dict,
)
from services.processor.runtime import tune_gc
from services.projectionstore.db import Cursor, Database
from services.projectionstore.meta import (
    create_tables,
    drop_tables,
    ensure_schema,
    existing_tables,
    live_generation,
    table_columns,
    write_lock,
    write_meta,
)
from services.projectionstore.schema import META_DDL, PROJECTION_SCHEMA_VERSION, Tables
from services.settings import Settings, load_settings

log = logging.getLogger(__name__)

CHUNK = 20_000


@dataclass
class ReplayStats:
    generation: int = 0
    events: int = 0
    readings: int = 0
    carried: int = 0  # readings only the live generation held (produced straight to Kafka)
    position: int = 0
    seconds: float = 0.0


@dataclass
class _Pending:
    """Measurement notices deferred to the end of the build: an objective is recomputed
    once for all the readings of the log, not once per chunk."""

    notices: dict[str, Notice] = field(default_factory=dict)

    def add(self, found: Sequence[Notice]) -> None:
        for n in found:
            keep_latest(self.notices, n.objective_id, n)

    def take(self) -> list[Notice]:
        found = [self.notices[k] for k in sorted(self.notices)]
        self.notices.clear()
        return found


def split(notes: Sequence[StoredNotification]) -> tuple[list[ReadingRow], list[GoalItem]]:
    """Readings (fast path) and goal events of a slice of the notification log; detection
    events are the processor's own output and are skipped."""
    rows: list[ReadingRow] = []
    items: list[GoalItem] = []
    for n in notes:
        if n.type == "reading.recorded":
            rows.append(reading_from_event_dict(orjson.loads(n.state), n.position))
        elif not n.type.startswith("detection."):
            event = events.decode(n.state)
            items.append(GoalItem(event, n.position, events.encode(event).decode()))
    return rows, items


def apply_chunk(
    p: Projector, tx: Tx, notes: Sequence[StoredNotification], pending: _Pending
) -> int:
    rows, items = split(notes)
    # Resolved to the objectives linked at this point of the log.
    pending.add(p.objectives_measuring(tx, p.readings_in(tx, rows)))
    p.goal_batch_in(tx, items, [])
    return len(rows)


Carried = tuple[str, str, float, str, str]
"""A live reading to carry over: (kpi_id, reading_id, value, observed_at, recorded_at)."""

_CARRIED = "kpi_id, reading_id, value, observed_at, recorded_at"
_LOOKUP = 400  # keys per IN (...) list


def _orgs(cur: Cursor, live: Tables, built: Tables) -> dict[str, str]:
    """kpi_id -> org_id from both generations' KPIs (a reading sent straight to Kafka was
    checked against the live one's)."""
    orgs: dict[str, str] = {}
    for table in [*sorted(existing_tables(cur, [live.kpis])), built.kpis]:
        for kpi_id, org_id in cur.execute(f"SELECT kpi_id, org_id FROM {table}").fetchall():
            orgs[str(kpi_id)] = str(org_id)
    return orgs


def _missing_keys(cur: Cursor, live: Tables, built: Tables) -> list[int]:
    """The reading_keys of the live readings the built generation lacks, in order: one scan
    of the live table, each reading looked up by its key. (One stored in the built
    generation under a NULL key, its key being another's there, is listed too:
    insert_readings keeps it once.)"""
    return sorted(
        int(key)
        for (key,) in cur.execute(
            f"SELECT l.reading_key FROM {live.readings} l WHERE l.reading_key IS NOT NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {built.readings} n"
            " WHERE n.reading_key = l.reading_key AND n.kpi_id = l.kpi_id"
            " AND n.reading_id = l.reading_id)"
        ).fetchall()
    )


def _by_keys(cur: Cursor, live: Tables, keys: Sequence[int]) -> list[Carried]:
    rows: list[Carried] = []
    for at in range(0, len(keys), _LOOKUP):
        chunk = keys[at : at + _LOOKUP]
        rows += cur.execute(
            f"SELECT {_CARRIED} FROM {live.readings}"
            f" WHERE reading_key IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
    return rows


def _apply_carried(
    p: Projector, tx: Tx, rows: Sequence[Carried], orgs: dict[str, str], pending: _Pending
) -> int:
    """Store `rows` not stored yet in the built generation, each with its event id (derived
    from org, KPI and reading id, as ingest derives it); their notices to `pending`. Returns
    how many were stored."""
    found: list[ReadingRow] = []
    for kpi_id, rid, value, observed_at, recorded_at in rows:
        org = orgs.get(kpi_id)
        if org is None:  # no KPI event defines it: its event ids cannot be derived
            log.warning("reading %s of KPI %s, which no KPI event defines, is dropped", rid, kpi_id)
            continue
        event_id = str(reading_stream_id(org, kpi_id, rid))
        found.append(
            ReadingRow(
                event_id, org, kpi_id, rid, float(value), observed_at, recorded_at, None, None
            )
        )
    before = tx.readings_stored
    # Only readings stored now cause notices: one the log holds under another observed_at
    # (the same reading id sent twice, differently) was stored from the log.
    pending.add(p.objectives_measuring(tx, p.readings_in(tx, found, stored_notify=False)))
    return tx.readings_stored - before


def _clashed(cur: Cursor, live: Tables) -> list[Carried]:
    """The live readings stored with a NULL key (their key was another's there)."""
    return cur.execute(
        f"SELECT {_CARRIED} FROM {live.readings} WHERE reading_key IS NULL"
    ).fetchall()


def _legacy_page(cur: Cursor, live: Tables, after: tuple[str, str], limit: int) -> list[Carried]:
    """A page of a live readings table without reading_key (a schema before v4), whole."""
    return cur.execute(
        f"SELECT {_CARRIED} FROM {live.readings} WHERE (kpi_id, reading_id) > (?, ?)"
        " ORDER BY kpi_id, reading_id LIMIT ?",
        (*after, limit),
    ).fetchall()


def carry_over(
    p: Projector,
    live: Tables,
    pending: _Pending,
    *,
    tx: Tx | None = None,
    chunk: int = CHUNK,
) -> int:
    """Store in the built generation every reading the live generation `live` holds and the
    built one does not (produced straight to Kafka: not in the log); return how many. Found
    by one read of the live table, then applied in a transaction per `chunk` readings, or
    all in `tx` (the swap, under the writers' lock). A live table of a schema before
    reading_key (v4) is read whole, in (kpi, reading id) order."""
    built = Tables(p.generation or live.generation + 1)
    with contextlib.ExitStack() as stack:
        cur = tx.cur if tx is not None else stack.enter_context(p.db.transaction(write=False))
        if not existing_tables(cur, [live.readings]):
            return 0  # nothing was built yet
        orgs = _orgs(cur, live, built)
        keyed = "reading_key" in table_columns(cur, live.readings)
        keys = _missing_keys(cur, live, built) if keyed else []
    carried = 0

    def step(load: Callable[[Cursor], list[Carried]]) -> list[Carried]:
        """Load rows and store them, in `tx` or in a transaction of its own."""
        nonlocal carried
        with contextlib.ExitStack() as stack:
            t = tx if tx is not None else stack.enter_context(p.transaction())
            rows = load(t.cur)
            carried += _apply_carried(p, t, rows, orgs, pending)
        return rows

    for at in range(0, len(keys), chunk):
        step(partial(_by_keys, live=live, keys=keys[at : at + chunk]))
    if keyed:
        step(partial(_clashed, live=live))
    else:
        after = ("", "")
        while (
            len(rows := step(partial(_legacy_page, live=live, after=after, limit=chunk))) == chunk
        ):
            after = (rows[-1][0], rows[-1][1])
    return carried


def rebuild(db: Database, store: EventStore, *, chunk: int = CHUNK) -> ReplayStats:
    """Build generation g+1 from the whole log and make it live; return what it did."""
    started = time.perf_counter()
    with db.transaction() as cur:
        write_lock(cur)
        cur.execute(META_DDL)
        old = live_generation(cur)
    new = old + 1
    tables = Tables(new)
    with db.transaction() as cur:
        drop_tables(cur, tables)  # leftovers of an interrupted replay
        create_tables(cur, tables)
    p = Projector(db, generation=new, lock=False, publish=False)
    stats = ReplayStats(generation=new)
    pending = _Pending()
    after = 0
    while True:
        notes = store.notifications(after, chunk)
        if not notes:
            break
        with p.transaction() as tx:
            stats.readings += apply_chunk(p, tx, notes, pending)
        stats.events += len(notes)
        after = notes[-1].position
    stats.carried += carry_over(p, Tables(old), pending, chunk=chunk)
    with p.transaction() as tx:
        p.goal_batch_in(tx, [], pending.take())
    # The swap: the live processor waits for the writers' lock while we catch up.
    with db.transaction() as cur:
        write_lock(cur)
        tx = p.on_cursor(cur)
        while notes := store.notifications(after, chunk):
            stats.readings += apply_chunk(p, tx, notes, pending)
            stats.events += len(notes)
            after = notes[-1].position
        live = Tables(live_generation(cur))
        # What the live processor applied while we built, and anything before if another
        # generation went live meanwhile: one scan of its readings against ours.
        stats.carried += carry_over(p, live, pending, tx=tx, chunk=chunk)
        p.goal_batch_in(tx, [], pending.take())
        p.tick_in(tx)
        p.flush(tx)
        # The live generation's watermarks, and its processor's deferred notices and the
        # watermarks they hold back: its next pass re-evaluates those objectives in the new
        # generation and releases them. The live tables may be of an older schema, or
        # missing (nothing was built yet): only these, with named columns, are read. (The
        # later notices and the objectives set aside need no copy: the build evaluated every
        # objective at its own now.)
        found = existing_tables(cur, [live.watermarks, live.pending_notices, live.pending_marks])
        for built, held, columns in (
            (
                tables.watermarks,
                live.watermarks,
                "stage, topic, part, source_part, position, updated_at",
            ),
            (
                tables.pending_notices,
                live.pending_notices,
                "objective_id, event_id, occurred_at, recorded_at, seq",
            ),
            (
                tables.pending_marks,
                live.pending_marks,
                "stage, topic, part, source_part, position, seq",
            ),
        ):
            if held in found:
                cur.execute(
                    f"INSERT INTO {built} ({columns}) SELECT {columns} FROM {held}"
                    " WHERE 1 = 1 ON CONFLICT DO NOTHING"
                )
        write_meta(cur, "generation", str(new))
        write_meta(cur, "schema_version", str(PROJECTION_SCHEMA_VERSION))
    with db.transaction() as cur:
        write_lock(cur)
        for g in range(1, new):
            drop_tables(cur, Tables(g))
    stats.position = after
    stats.seconds = time.perf_counter() - started
    return stats


def main(settings: Settings | None = None) -> int:
    """Rebuild the projections from the log and swap them in; print what was done."""
    settings = settings or load_settings()
    tune_gc()
    logging.basicConfig(level=settings.log_level)
    db = Database.from_settings(settings, settings.projections_db_path, sqlite_cache_kib=64 * 1024)
    store = EventStore.from_settings(settings)
    try:
        ensure_schema(db)
        stats = rebuild(db, store)
    finally:
        store.close()
        db.close()
    rate = stats.events / stats.seconds if stats.seconds else 0.0
    print(
        f"replayed {stats.events} events ({stats.readings} readings) up to position "
        f"{stats.position}, and {stats.carried} readings sent straight to Kafka, into "
        f"generation {stats.generation} in {stats.seconds:.1f} s "
        f"({rate:,.0f} events/s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

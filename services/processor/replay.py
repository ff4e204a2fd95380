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
new generation. The old tables are dropped after. The swap also reconciles the built
detections with the live ones (services/processor/episodes.py): episodes told before are
kept, versions go on, and what changed is published.

A goal event or an evaluation that fails on its own does not stop the build: its stream is
parked, or its objective set aside, in the built generation (as the live processor does);
should it fail inside the swap, the swap is rolled back, that part done without the lock,
and the swap tried again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

import events
from services.eventstore.existing import store_missing
from services.eventstore.store import EventStore, StoredNotification, StoreUnavailableError
from services.processor.carry import Carrier
from services.processor.episodes import carry_detections
from services.processor.projector import Projector, Tx
from services.processor.records import (
    GoalItem,
    Notice,
    ReadingRow,
    keep_latest,
    reading_from_event_dict,
)
from services.processor.runtime import tune_gc
from services.projectionstore.db import Database, DatabaseUnavailableError
from services.projectionstore.meta import (
    create_tables,
    drop_tables,
    ensure_schema,
    existing_tables,
    live_generation,
    swap_mark_key,
    write_lock,
    write_meta,
)
from services.projectionstore.schema import META_DDL, PROJECTION_SCHEMA_VERSION, Tables
from services.settings import Settings, load_settings

log = logging.getLogger(__name__)

CHUNK = 20_000
OBJECTIVES_PER_TX = 1_000  # objectives re-evaluated per transaction at the end of the build
CATCH_UP_ROUNDS = 10  # unlocked rounds of catching up with the live readings, at most
SWAP_ATTEMPTS = 3


@dataclass
class ReplayStats:
    generation: int = 0
    events: int = 0
    readings: int = 0
    carried: int = 0  # readings only the live generation held (produced straight to Kafka)
    detection_events: int = 0  # raised/resolved at the swap (services/processor/episodes.py)
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


def runs(notes: Sequence[StoredNotification]) -> list[tuple[list[ReadingRow], list[GoalItem]]]:
    """A slice of the notification log as runs in log order, each of readings (fast path)
    or of goal events; detection events are the processor's own output and are skipped. A
    goal event is applied after the readings before it in the log and before those after
    it: its history row counts what was recorded up to it, whatever the chunk size."""
    found: list[tuple[list[ReadingRow], list[GoalItem]]] = []
    for n in notes:
        if n.type.startswith("detection."):
            continue
        reading = n.type == "reading.recorded"
        if not found or bool(found[-1][0]) != reading:
            found.append(([], []))
        rows, items = found[-1]
        if reading:
            rows.append(reading_from_event_dict(orjson.loads(n.state), n.position))
        else:
            event = events.decode(n.state)
            items.append(GoalItem(event, n.position, events.encode(event).decode()))
    return found


def apply_chunk(
    p: Projector, tx: Tx, notes: Sequence[StoredNotification], pending: _Pending
) -> int:
    count = 0
    for rows, items in runs(notes):
        # Resolved to the objectives linked at this point of the log.
        pending.add(p.readings_notices(tx, rows))
        p.goal_batch_in(tx, items, [])
        count += len(rows)
    return count


def apply_chunk_by_stream(
    p: Projector, notes: Sequence[StoredNotification], pending: _Pending
) -> int:
    """apply_chunk after it failed on these notes, run by run: readings in a transaction,
    goal events each stream in transactions of its own; a stream that fails on its own is
    parked in the built generation (a starting processor applies it again), and the build
    goes on."""
    count = 0
    for rows, items in runs(notes):
        if rows:
            with p.transaction() as tx:
                pending.add(p.readings_notices(tx, rows))
            count += len(rows)
        if items:
            p.apply_goal_take_by_stream(items, [], [])
    return count


def _apply_log(
    p: Projector,
    store: EventStore,
    after: int,
    pending: _Pending,
    stats: ReplayStats,
    chunk: int,
) -> int:
    """Apply the log after position `after` to its end, a transaction per chunk (a chunk
    that fails is applied stream by stream); return the last position."""
    while notes := store.notifications(after, chunk):
        try:
            with p.transaction() as tx:
                stats.readings += apply_chunk(p, tx, notes, pending)
        except DatabaseUnavailableError:
            raise
        except Exception:
            log.exception("a chunk of the log failed; applying it stream by stream")
            stats.readings += apply_chunk_by_stream(p, notes, pending)
        stats.events += len(notes)
        after = notes[-1].position
    return after


def _held_objectives(tx: Tx) -> set[str]:
    """Objectives set aside, or with goal events parked, in the generation `tx` builds."""
    t = tx.tables
    return {
        str(o)
        for (o,) in tx.cur.execute(
            f"SELECT objective_id FROM {t.set_aside} UNION SELECT stream_id FROM {t.parked_events}"
        ).fetchall()
    }


def _swap(
    p: Projector,
    store: EventStore,
    carrier: Carrier,
    after: int,
    mark: int | None,
    pending: _Pending,
    stats: ReplayStats,
    chunk: int,
) -> tuple[int, int | None]:
    """In one transaction holding the writers' lock: catch up with the log and the live
    readings, copy the live bookkeeping, make the built generation live. Returns the log
    position and the readings' mark it reached."""
    built = carrier.built
    with p.db.transaction() as cur:
        write_lock(cur)
        tx = p.on_cursor(cur)
        while notes := store.notifications(after, chunk):
            stats.readings += apply_chunk(p, tx, notes, pending)
            stats.events += len(notes)
            after = notes[-1].position
        live = Tables(live_generation(cur))
        newer = carrier.mark(tx)
        if live.generation == carrier.live.generation and mark is not None and newer is not None:
            carrier.arrived(mark, newer, tx)
            mark = newer
        else:  # another generation went live meanwhile, or one with no arrival order
            Carrier(p, live, pending.add, chunk).missing(tx)
        stats.carried = carrier.carried
        # An objective set aside or parked in the build would fail here again: its notices
        # wait for a live pass, which sets it aside again if need be.
        tail = pending.take()
        waiting = _held_objectives(tx)
        p.defer_in(tx, [n for n in tail if n.objective_id in waiting], [])
        try:
            p.goal_batch_in(tx, [], [n for n in tail if n.objective_id not in waiting])
        except Exception:
            pending.add(tail)  # for the evaluation without the lock
            raise
        p.tick_in(tx)
        p.flush(tx)
        # What okr.detections.v1 has told (services/processor/episodes.py); the change feed
        # of a live subscriber goes on from here (meta.swap_mark_key).
        (seq,) = cur.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {built.changes}").fetchone() or (
            0,
        )
        write_meta(cur, swap_mark_key(built), str(int(seq)))
        stats.detection_events = carry_detections(p, tx, live, built)
        p.flush(tx)
        # The live generation's watermarks, and its processor's deferred notices and the
        # watermarks they hold back: its next pass re-evaluates those objectives in the new
        # generation and releases them. The live tables may be of an older schema, or
        # missing (nothing was built yet): only these, with named columns, are read. (The
        # later notices and the objectives set aside need no copy: the build evaluated every
        # objective at its own now.)
        found = existing_tables(cur, [live.watermarks, live.pending_notices, live.pending_marks])
        for into, held, columns in (
            (
                built.watermarks,
                live.watermarks,
                "stage, topic, part, source_part, position, updated_at",
            ),
            (
                built.pending_notices,
                live.pending_notices,
                "objective_id, event_id, occurred_at, recorded_at, seq",
            ),
            (
                built.pending_marks,
                live.pending_marks,
                "stage, topic, part, source_part, position, seq",
            ),
        ):
            if held in found:
                cur.execute(
                    f"INSERT INTO {into} ({columns}) SELECT {columns} FROM {held}"
                    " WHERE 1 = 1 ON CONFLICT DO NOTHING"
                )
        write_meta(cur, "generation", str(built.generation))
        write_meta(cur, "schema_version", str(PROJECTION_SCHEMA_VERSION))
    return after, mark


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
    after = _apply_log(p, store, 0, pending, stats, chunk)
    # The readings only the live generation holds (services/processor/carry.py): all of
    # them, then, unlocked, those the live processor stores meanwhile, until little is left
    # for the swap.
    carrier = Carrier(p, Tables(old), pending.add, chunk)
    mark = carrier.mark()
    carrier.missing()
    gap: int | None = None
    for _ in range(CATCH_UP_ROUNDS):
        p.evaluate_notices(pending.take(), OBJECTIVES_PER_TX)
        newer = carrier.mark()
        if mark is None or newer is None or newer - mark <= chunk:
            break
        if gap is not None and newer - mark >= gap:
            break  # the live processors store faster than we catch up: the swap waits
        carrier.arrived(mark, newer)
        gap, mark = newer - mark, newer
    # The swap, under the writers' lock. Should something fail in it (a goal event or an
    # evaluation that fails on its own, appended or arrived meanwhile), it is rolled back,
    # what failed is parked or set aside without the lock, and the swap tried again.
    for attempt in range(SWAP_ATTEMPTS):
        # The log's events appended meanwhile, before the lock as well.
        after = _apply_log(p, store, after, pending, stats, chunk)
        p.evaluate_notices(pending.take(), OBJECTIVES_PER_TX)
        counted = (stats.readings, stats.events, carrier.carried)
        try:
            after, mark = _swap(p, store, carrier, after, mark, pending, stats, chunk)
            break
        except DatabaseUnavailableError:
            raise
        except Exception:
            if attempt == SWAP_ATTEMPTS - 1:
                raise
            # Rolled back: counted again next time.
            stats.readings, stats.events, carrier.carried = counted
            log.exception("the swap failed: applying its part without the lock, then again")
            if mark is None:
                carrier.missing()
            elif (newer := carrier.mark()) is not None:
                carrier.arrived(mark, newer)
                mark = newer
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
    # Never from an empty store that opening would create (a mistyped OKR_DATA_DIR, a
    # removed events.sqlite): the rebuild would swap empty tables in for the live ones.
    try:
        missing = store_missing(settings)
    except StoreUnavailableError as exc:
        missing = str(exc)
    if missing is not None:
        print(f"okrstream replay: {missing}; the projections are left as they are", file=sys.stderr)
        return 1
    db = Database.from_settings(settings, settings.projections_db_path, sqlite_cache_kib=64 * 1024)
    store = EventStore.from_settings(settings)
    try:
        ensure_schema(db)
        with db.exclusive("rebuild"):  # not beside a starting processor's rebuild
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

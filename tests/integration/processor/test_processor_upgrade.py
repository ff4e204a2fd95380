"""A store built by projection schema v3 is brought to the current one: in place at the
processor's start (migrations.migrate), keeping what only the projections hold, and by
`okrstream replay`, whatever the old generation's tables look like. On SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from services.eventstore.store import EventStore
from services.processor import replay
from services.processor.projector import Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import (
    ensure_schema,
    existing_tables,
    live_generation,
    read_meta,
)
from services.projectionstore.migrations import migrate
from services.projectionstore.schema import PROJECTION_SCHEMA_VERSION, Tables, reading_key
from services.settings import Settings
from tests.unit.processor.builders import Log, synthetic


def v3_store(settings: Settings, log: Log) -> Database:
    """Generation 1 as schema v3 left it: its readings table had other columns and a
    unique (kpi_id, reading_id) index, and there were no later_notices, set_aside or
    parked_events tables.
    The log's readings are in it, plus one produced straight to Kafka (not in the log)."""
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    t = Tables(1)
    rows = [
        (r.event_id, r.org_id, r.kpi_id, r.reading_id, r.value, r.observed_at, r.recorded_at)
        for r in log.reading_rows()
    ]
    kpi = rows[0][2]
    rows.append(("e-direct", "acme", kpi, "direct", 5.0, rows[0][5], rows[0][6]))
    with db.transaction() as cur:
        for name in (t.readings, t.later_notices, t.set_aside, t.parked_events):
            cur.execute(f"DROP TABLE {name}")
        cur.execute(
            f"CREATE TABLE {t.readings} (event_id TEXT NOT NULL, org_id TEXT NOT NULL,"
            " kpi_id TEXT NOT NULL, reading_id TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,"
            " observed_at TEXT NOT NULL, recorded_at TEXT NOT NULL, source TEXT,"
            " position BIGINT)"
        )
        cur.execute(f"CREATE INDEX {t.readings}_kpi ON {t.readings} (kpi_id, observed_at)")
        cur.execute(f"CREATE UNIQUE INDEX {t.readings}_rid ON {t.readings} (kpi_id, reading_id)")
        cur.executemany(
            f"INSERT INTO {t.readings} (event_id, org_id, kpi_id, reading_id, value,"
            " observed_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        cur.execute("UPDATE projection_meta SET value = '3' WHERE key = 'schema_version'")
    return db


def readings(db: Database, generation: int) -> list[tuple[object, ...]]:
    with db.transaction(write=False) as cur:
        return [
            tuple(r)
            for r in cur.execute(
                f"SELECT kpi_id, reading_id, value, reading_key FROM {Tables(generation).readings}"
                " ORDER BY kpi_id, reading_id"
            ).fetchall()
        ]


def test_a_v3_store_is_migrated_in_place_keeping_every_reading(settings: Settings) -> None:
    log = Log()
    synthetic(log, objectives=4, kpis=2, readings=30)
    db = v3_store(settings, log)
    try:
        assert ensure_schema(db) == (1, 3), "an older schema's tables are left as they are"
        assert migrate(db) == PROJECTION_SCHEMA_VERSION
        assert migrate(db) == PROJECTION_SCHEMA_VERSION, "once"
        with db.transaction(write=False) as cur:
            assert live_generation(cur) == 1
            assert read_meta(cur, "schema_version") == str(PROJECTION_SCHEMA_VERSION)
            t = Tables(1)
            found = existing_tables(
                cur, [t.later_notices, t.set_aside, t.parked_events, f"{t.readings}_v3"]
            )
            assert found == {t.later_notices, t.set_aside, t.parked_events}
        found = readings(db, 1)
        assert len(found) == 31, "the direct reading too"
        assert all(key == reading_key(str(k), str(r)) for k, r, _, key in found)
        # The migrated table does what a built one does: a redelivery counts once.
        p = Projector(db)
        rows = log.reading_rows()
        p.apply_readings(rows[:10])
        assert readings(db, 1) == found
    finally:
        db.close()


def test_a_v4_store_is_migrated_in_place(settings: Settings) -> None:
    """v5 adds parked_events and, on PostgreSQL, the readings' arrival order (`seq`) for
    every reading stored after (those before keep a NULL: no rewrite of a big table)."""
    log = Log()
    synthetic(log, objectives=4, kpis=2, readings=30)
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    t = Tables(1)
    try:
        p = Projector(db)
        rows = log.reading_rows()
        p.apply_readings(rows[:20])
        with db.transaction() as cur:  # generation 1 as schema v4 left it
            cur.execute(f"DROP TABLE {t.parked_events}")
            if cur.dialect == "postgres":
                cur.execute(f"ALTER TABLE {t.readings} DROP COLUMN seq")
            cur.execute("UPDATE projection_meta SET value = '4' WHERE key = 'schema_version'")
        assert migrate(db) == PROJECTION_SCHEMA_VERSION
        order = "seq" if settings.uses_postgres else "rowid"
        with db.transaction(write=False) as cur:
            assert existing_tables(cur, [t.parked_events]) == {t.parked_events}
            (mark,) = cur.execute(f"SELECT COALESCE(MAX({order}), 0) FROM {t.readings}").fetchone()
        p.apply_readings(rows[20:])
        with db.transaction(write=False) as cur:
            after = cur.execute(
                f"SELECT reading_id FROM {t.readings} WHERE {order} > ?", (mark,)
            ).fetchall()
            (count,) = cur.execute(f"SELECT COUNT(*) FROM {t.readings}").fetchone()
        assert {rid for (rid,) in after} == {r.reading_id for r in rows[20:]}, "in arrival order"
        assert count == 30
    finally:
        db.close()


def test_a_v3_store_is_rebuilt_by_replay(settings: Settings) -> None:
    log = Log()
    synthetic(log, objectives=4, kpis=2, readings=30)
    store = EventStore.from_settings(settings)
    try:
        store.append([e for _, e in log.entries])
    finally:
        store.close()
    db = v3_store(settings, log)
    try:
        assert replay.main(settings) == 0
        with db.transaction(write=False) as cur:
            assert live_generation(cur) == 2
            assert read_meta(cur, "schema_version") == str(PROJECTION_SCHEMA_VERSION)
            assert existing_tables(cur, Tables(1).all()) == set(), "the old one is dropped"
        found = readings(db, 2)
        assert len(found) == 31, "the log's readings, and the one sent straight to Kafka"
        assert all(key == reading_key(str(k), str(r)) for k, r, _, key in found)
    finally:
        db.close()


def test_processors_starting_together_rebuild_one_at_a_time(settings: Settings) -> None:
    """Workers of a new release start together: one brings the store to the new schema, the
    others wait for it (a second rebuild beside it would drop the first one's tables)."""
    first, second = (Database.from_settings(settings, settings.projections_db_path) for _ in "ab")
    order: list[str] = []

    def wait_then_enter() -> None:
        with second.exclusive("rebuild", poll_s=0.01):
            order.append("second")

    try:
        with first.exclusive("rebuild"):
            waiting = threading.Thread(target=wait_then_enter)
            waiting.start()
            time.sleep(0.5)  # time enough to enter, were the lock not held
            order.append("first done")
        waiting.join(10)
        assert order == ["first done", "second"]
        with second.exclusive("rebuild"):  # released, and taken again
            order.append("again")
        assert order[-1] == "again"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("stored", ["5", "6", "7"])
def test_a_v5_to_v7_store_is_re_scored_in_place(settings: Settings, stored: str) -> None:
    """v6, v7 and v8 correct the arithmetic: every objective is deferred, with no cause, so
    the next pass re-evaluates it under the new rules without writing a history row. v8
    also keeps each KPI day's latest recorded_at, filled in from the stored readings."""
    log = Log()
    objectives, _ = synthetic(log, objectives=6, kpis=2, readings=30)
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    t = Tables(1)
    try:
        p = Projector(db)
        p.apply_goal_batch(log.goal_items(), p.apply_readings(log.reading_rows()))
        with db.transaction() as cur:
            (history,) = cur.execute(f"SELECT COUNT(*) FROM {t.score_history}").fetchone()
            cur.execute(f"UPDATE {t.objectives} SET score = -1")  # as if scored otherwise
            cur.execute(f"ALTER TABLE {t.kpi_days} DROP COLUMN last_recorded")  # before v8
            cur.execute(
                "UPDATE projection_meta SET value = ? WHERE key = 'schema_version'", (stored,)
            )
        assert migrate(db) == PROJECTION_SCHEMA_VERSION == 8
        latest: dict[tuple[str, str], str] = {}
        for r in log.reading_rows():
            key = (r.kpi_id, r.observed_at[:10])
            latest[key] = max(latest.get(key, ""), r.recorded_at)
        with db.transaction(write=False) as cur:
            days = cur.execute(f"SELECT kpi_id, day, last_recorded FROM {t.kpi_days}").fetchall()
        assert {(k, d): r for k, d, r in days} == latest
        with db.transaction(write=False) as cur:
            found = cur.execute(f"SELECT objective_id FROM {t.pending_notices}").fetchall()
            pending = {o for (o,) in found}
        assert pending == {str(o) for o in objectives}
        p = Projector(db)  # a processor starting after the migration
        upto = p.pending_bound()
        assert upto is not None
        while p.evaluate_pending(upto, 4)[1]:
            pass
        with db.transaction(write=False) as cur:
            assert cur.execute(f"SELECT COUNT(*) FROM {t.pending_notices}").fetchone() == (0,)
            assert cur.execute(f"SELECT MIN(score) FROM {t.objectives}").fetchone()[0] >= 0
            assert cur.execute(f"SELECT COUNT(*) FROM {t.score_history}").fetchone() == (history,)
    finally:
        db.close()

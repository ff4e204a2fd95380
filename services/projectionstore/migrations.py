"""In-place upgrades of the live generation from an older projection schema, where the
change is a reshaping of what is stored rather than new arithmetic: no rebuild from the log.

A rebuild re-reads the whole log (and carries over the readings only the projections hold,
see services/processor/replay.py): it takes as long as the log is big. `migrate` runs under
the writers' lock in one transaction: the processor calls it at start, before it would
rebuild.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from services.projectionstore.db import Cursor, Database
from services.projectionstore.meta import (
    create_tables,
    live_generation,
    read_meta,
    table_columns,
    write_lock,
    write_meta,
)
from services.projectionstore.readings import insert_readings
from services.projectionstore.schema import PROJECTION_SCHEMA_VERSION, Tables, iso

log = logging.getLogger(__name__)

COPY_ROWS = 20_000  # readings copied per statement batch


def _v3_to_v4(cur: Cursor, t: Tables) -> None:
    """v4 keeps fewer readings columns and a 64-bit once-only key (schema.reading_key), and
    adds later_notices and set_aside. The readings are copied into the new table: every one
    (by either path) with its key; one whose key another holds, with a NULL key."""
    old = f"{t.readings}_v3"
    cur.execute(f"ALTER TABLE {t.readings} RENAME TO {old}")
    # v4 names an index like this one; the old unique index goes with the old table and
    # orders the copy meanwhile.
    cur.execute(f"DROP INDEX IF EXISTS {t.readings}_kpi")
    create_tables(cur, t)
    after = ("", "")
    while True:
        rows = cur.execute(
            f"SELECT kpi_id, reading_id, value, observed_at, recorded_at FROM {old}"
            " WHERE (kpi_id, reading_id) > (?, ?) ORDER BY kpi_id, reading_id LIMIT ?",
            (*after, COPY_ROWS),
        ).fetchall()
        if not rows:
            break
        insert_readings(cur, t.readings, rows)  # v3 held each (kpi, reading id) once
        after = (rows[-1][0], rows[-1][1])
    cur.execute(f"DROP TABLE {old}")


def _v4_to_v5(cur: Cursor, t: Tables) -> None:
    """v5 adds parked_events (goal events whose application failed on its own) and, on
    PostgreSQL, the readings' arrival order: a `seq` column numbering the readings stored
    from now on (the ones stored before keep a NULL: no rewrite of the table; a replay
    compares them whole anyway)."""
    if cur.dialect == "postgres" and "seq" not in table_columns(cur, t.readings):
        sequence = f"{t.readings}_seq_seq"  # the name BIGSERIAL gives it
        cur.execute(f"CREATE SEQUENCE IF NOT EXISTS {sequence}")
        cur.execute(f"ALTER TABLE {t.readings} ADD COLUMN seq BIGINT")
        cur.execute(f"ALTER TABLE {t.readings} ALTER COLUMN seq SET DEFAULT nextval('{sequence}')")
        cur.execute(f"ALTER SEQUENCE {sequence} OWNED BY {t.readings}.seq")
    create_tables(cur, t)


def _rescore_all(cur: Cursor, t: Tables) -> None:
    """Every objective deferred for the next pass with no cause: its view and detections
    follow corrected arithmetic, without a history row (the history keeps what was shown
    then) and without a rebuild.

    v6 has the tables of v5 and corrected arithmetic: a maintain key result judges each
    observation against the target in force then; a closed objective counts the readings
    and check-ins up to its close, not the rest of its closing day; an owner's closures
    follow the objective's owner. v7 has the tables of v6 (and the held_readings table all
    generations share): weighted means and rollups are exact (weight 3 at 0.7 scores 0.7,
    not 0.6999999999999998, below the policy's thresholds), an objective archived after
    its close stays among its owner's closures, and a key result linked to a KPI without
    data in the period is scored from its check-ins (a promoted one kept falling to its
    start)."""
    (seq,) = cur.execute(
        f"SELECT COALESCE(MAX(seq), 0) + 1 FROM (SELECT MAX(seq) AS seq FROM"
        f" {t.pending_notices} UNION ALL SELECT MAX(seq) FROM {t.pending_marks}) AS s"
    ).fetchone() or (1,)
    epoch = iso(datetime(1970, 1, 1, tzinfo=UTC))
    cur.execute(
        f"INSERT INTO {t.pending_notices} (objective_id, event_id, occurred_at, recorded_at,"
        f" seq) SELECT objective_id, '', ?, ?, ? FROM {t.objectives}"
        " WHERE true ON CONFLICT (objective_id) DO NOTHING",  # WHERE: SQLite's upsert parse
        (epoch, epoch, seq),
    )


def _v7_to_v8(cur: Cursor, t: Tables) -> None:
    """v8 keeps each KPI day's latest recorded_at (kpi_days.last_recorded), filled in here
    from the stored readings: a closed objective's score is final, counting the readings
    recorded up to its close, and a reading recorded after it (a backdated import) changed
    it. Every objective is then re-scored (`_rescore_all`)."""
    if "last_recorded" not in table_columns(cur, t.kpi_days):
        cur.execute(f"ALTER TABLE {t.kpi_days} ADD COLUMN last_recorded TEXT")
    # A day's readings are those whose observed_at text begins with it ('U' follows 'T').
    cur.execute(
        f"UPDATE {t.kpi_days} SET last_recorded = (SELECT MAX(r.recorded_at) FROM"
        f" {t.readings} r WHERE r.kpi_id = {t.kpi_days}.kpi_id"
        f" AND r.observed_at >= {t.kpi_days}.day AND r.observed_at < {t.kpi_days}.day || 'U')"
    )
    _rescore_all(cur, t)


STEPS: dict[int, Callable[[Cursor, Tables], None]] = {
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _rescore_all,
    6: _rescore_all,
    7: _v7_to_v8,
}
"""From schema version N to N + 1, in place."""


def migrate(db: Database) -> int:
    """Bring the live generation to PROJECTION_SCHEMA_VERSION in place when every step from
    its stored version has a migration; return the version it is at (lower: rebuild)."""
    with db.transaction() as cur:
        write_lock(cur)
        if cur.dialect == "postgres":  # a step may copy or index a big table: no 30 s limit
            cur.execute("SET LOCAL statement_timeout = 0")
        stored = read_meta(cur, "schema_version")
        version = PROJECTION_SCHEMA_VERSION if stored is None else int(stored)
        if version >= PROJECTION_SCHEMA_VERSION or any(
            v not in STEPS for v in range(version, PROJECTION_SCHEMA_VERSION)
        ):
            return version
        tables = Tables(live_generation(cur))
        for v in range(version, PROJECTION_SCHEMA_VERSION):
            log.info("projection schema v%s -> v%s in place (%s)", v, v + 1, tables.readings)
            STEPS[v](cur, tables)
        write_meta(cur, "schema_version", str(PROJECTION_SCHEMA_VERSION))
        return PROJECTION_SCHEMA_VERSION

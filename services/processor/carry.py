"""Readings only the projections hold, carried into the generation a replay builds.

Readings produced straight to okr.kpi-readings.v1 (by integrations in either ingest mode, by
ingest itself with OKR_INGEST_MODE=kafka) are not in the event store's log: besides Kafka's
retention, their one durable copy is the live generation's readings table. A replay
(services/processor/replay.py) builds from the log, then stores in the new generation every
reading the live one holds and the new one lacks, each with its event id (derived from org,
KPI and reading id, as ingest derives it):

- `missing`: one comparison of the whole live table with the built one, by reading_key, in
  key ranges of about RANGE_ROWS live readings (bounded memory and statement time);
- `arrived`: the readings stored live after a point of the table's arrival order
  (schema.readings_order), which is how the replay catches up, unlocked and then under the
  writers' lock at the swap, with what the live processor applies while it builds.

A live table of a schema before reading_key (v4) is compared whole, in (kpi, reading id)
pages; one without an arrival order (PostgreSQL before v5) is compared whole at the swap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from contracts.readings import reading_stream_id
from services.processor.projector import Projector, Tx
from services.processor.records import Notice, ReadingRow
from services.projectionstore.db import Cursor
from services.projectionstore.meta import existing_tables, table_columns
from services.projectionstore.schema import Tables, readings_order

log = logging.getLogger(__name__)
A = TypeVar("A")

Carried = tuple[str, str, float, str, str]
"""A live reading: (kpi_id, reading_id, value, observed_at, recorded_at)."""

COLUMNS = "kpi_id, reading_id, value, observed_at, recorded_at"
RANGE_ROWS = 500_000  # live readings per reading_key range compared at once
LOOKUP = 400  # keys per IN (...) list
KEY_MIN, KEY_MAX = -(2**63), 2**63 - 1


@dataclass
class Carrier:
    """Carries readings from generation `live` into the one `p` builds (p.generation);
    `notify` receives the notices of the readings stored. Without `tx`, each chunk of
    readings is stored in a transaction of its own; with it, everything is in `tx`."""

    p: Projector
    live: Tables
    notify: Callable[[Sequence[Notice]], None]
    chunk: int
    carried: int = 0  # readings stored so far
    _orgs: dict[str, str] = field(default_factory=dict)

    @property
    def built(self) -> Tables:
        assert self.p.generation is not None
        return Tables(self.p.generation)

    @contextlib.contextmanager
    def _reading(self, tx: Tx | None) -> Iterator[Cursor]:
        if tx is not None:
            yield tx.cur
        else:
            with self.p.db.transaction(write=False) as cur:
                yield cur

    def mark(self, tx: Tx | None = None) -> int | None:
        """Where the live table's arrival order stands; None when it has no such order (a
        PostgreSQL table of a schema before v5) or no readings table at all."""
        with self._reading(tx) as cur:
            if not existing_tables(cur, [self.live.readings]):
                return None
            order = readings_order(cur.dialect)
            if order != "rowid" and order not in table_columns(cur, self.live.readings):
                return None
            row = cur.execute(f"SELECT COALESCE(MAX({order}), 0) FROM {self.live.readings}")
            found = row.fetchone()
        return int(found[0]) if found else 0

    def missing(self, tx: Tx | None = None) -> int:
        """Store every live reading the built generation lacks; return how many."""
        with self._reading(tx) as cur:
            if not existing_tables(cur, [self.live.readings]):
                return 0  # nothing was built yet
            keyed = "reading_key" in table_columns(cur, self.live.readings)
            row = cur.execute(f"SELECT COUNT(*) FROM {self.live.readings}").fetchone()
        before = self.carried
        if not keyed:
            after = ("", "")
            while len(rows := self._store(tx, self._legacy_page, after)) == self.chunk:
                after = (rows[-1][0], rows[-1][1])
            return self.carried - before
        parts = max(1, -(-int(row[0] if row else 0) // RANGE_ROWS))
        step = (KEY_MAX - KEY_MIN + 1) // parts
        for i in range(parts):
            low = KEY_MIN + i * step
            high = KEY_MAX if i == parts - 1 else low + step - 1
            with self._reading(tx) as cur:
                keys = self._missing_keys(cur, low, high)
            for at in range(0, len(keys), self.chunk):
                self._store(tx, self._by_keys, keys[at : at + self.chunk])
        self._store(tx, self._clashed, None)
        return self.carried - before

    def arrived(self, after: int, upto: int, tx: Tx | None = None) -> int:
        """Store the live readings whose arrival order is in (after, upto] and the built
        generation lacks; return how many."""
        before = self.carried
        for start in range(after, upto, self.chunk):
            self._store(tx, self._arrived_page, (start, min(start + self.chunk, upto)))
        return self.carried - before

    # -- loading -------------------------------------------------------------------------------

    def _missing_keys(self, cur: Cursor, low: int, high: int) -> list[int]:
        """The keys in [low, high] of live readings the built generation lacks. (One stored
        there under a NULL key, its key being another's, is listed too: storing it again is
        a no-op.)"""
        return sorted(
            int(key)
            for (key,) in cur.execute(
                f"SELECT l.reading_key FROM {self.live.readings} l"
                " WHERE l.reading_key >= ? AND l.reading_key <= ?"
                f" AND NOT EXISTS (SELECT 1 FROM {self.built.readings} n"
                " WHERE n.reading_key = l.reading_key AND n.kpi_id = l.kpi_id"
                " AND n.reading_id = l.reading_id"
                # The range again: PostgreSQL then reads only this range of the built table
                # (a merge of the two key indexes) instead of hashing all of it each time.
                " AND n.reading_key >= ? AND n.reading_key <= ?)",
                (low, high, low, high),
            ).fetchall()
        )

    def _by_keys(self, cur: Cursor, keys: Sequence[int]) -> list[Carried]:
        rows: list[Carried] = []
        for at in range(0, len(keys), LOOKUP):
            part = keys[at : at + LOOKUP]
            rows += cur.execute(
                f"SELECT {COLUMNS} FROM {self.live.readings}"
                f" WHERE reading_key IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
        return rows

    def _clashed(self, cur: Cursor, _: None) -> list[Carried]:
        """The live readings stored with a NULL key (their key was another's there)."""
        return cur.execute(
            f"SELECT {COLUMNS} FROM {self.live.readings} WHERE reading_key IS NULL"
        ).fetchall()

    def _legacy_page(self, cur: Cursor, after: tuple[str, str]) -> list[Carried]:
        return cur.execute(
            f"SELECT {COLUMNS} FROM {self.live.readings} WHERE (kpi_id, reading_id) > (?, ?)"
            " ORDER BY kpi_id, reading_id LIMIT ?",
            (*after, self.chunk),
        ).fetchall()

    def _arrived_page(self, cur: Cursor, span: tuple[int, int]) -> list[Carried]:
        order = readings_order(cur.dialect)
        return cur.execute(
            f"SELECT {COLUMNS} FROM {self.live.readings} WHERE {order} > ? AND {order} <= ?",
            span,
        ).fetchall()

    # -- storing -------------------------------------------------------------------------------

    def _store(
        self, tx: Tx | None, load: Callable[[Cursor, A], list[Carried]], arg: A
    ) -> list[Carried]:
        """Load rows with `load(cursor, arg)` and store those the built generation lacks, in
        `tx` or in a transaction of its own; return the rows loaded."""
        with contextlib.ExitStack() as stack:
            t = tx if tx is not None else stack.enter_context(self.p.transaction())
            rows = load(t.cur, arg)
            self._apply(t, rows)
        return rows

    def _apply(self, tx: Tx, rows: Sequence[Carried]) -> None:
        found: list[ReadingRow] = []
        # By KPI and time: a chunk's readings fold into few KPI-days.
        for kpi_id, rid, value, observed_at, recorded_at in sorted(rows, key=_by_kpi_time):
            org = self._org(tx, kpi_id)
            if org is None:  # no KPI event defines it: its event ids cannot be derived
                log.warning("reading %s of KPI %s (no KPI event defines it) is left", rid, kpi_id)
                continue
            event_id = str(reading_stream_id(org, kpi_id, rid))
            row = ReadingRow(
                event_id, org, kpi_id, rid, value, observed_at, recorded_at, None, None
            )
            found.append(row)
        before = tx.readings_stored
        # Only readings stored now cause notices: one the log holds under another observed
        # time (the same reading id sent twice, differently) was stored from the log.
        self.notify(self.p.readings_notices(tx, found, stored_notify=False))
        self.carried += tx.readings_stored - before

    def _org(self, tx: Tx, kpi_id: str) -> str | None:
        """The KPI's organisation, from either generation's KPIs (a reading sent straight to
        Kafka was checked against the live one's)."""
        if kpi_id not in self._orgs:
            for table in [self.built.kpis, *sorted(existing_tables(tx.cur, [self.live.kpis]))]:
                row = tx.cur.execute(
                    f"SELECT org_id FROM {table} WHERE kpi_id = ?", (kpi_id,)
                ).fetchone()
                if row is not None:
                    self._orgs[kpi_id] = str(row[0])
                    break
        return self._orgs.get(kpi_id)


def _by_kpi_time(row: Carried) -> tuple[str, str]:
    return row[0], row[3]

"""The readings table's once-only insert: each (kpi_id, reading_id) is stored once, keyed
by `schema.reading_key`; a reading whose key another reading holds is stored with a NULL
key (the unique partial index `_clash` keeps those once). Used by the processor for every
batch and by the v3 → v4 migration."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from services.projectionstore.db import Cursor
from services.projectionstore.schema import reading_key

Reading = tuple[str, str, float, str, str]
"""(kpi_id, reading_id, value, observed_at, recorded_at), timestamps as `schema.iso` text."""

_LOOKUP = 400  # keys per IN (...) list: well under SQLite's bound-parameter limit
_first = itemgetter(0)


def insert_readings(cur: Cursor, table: str, rows: Sequence[Reading]) -> list[int]:
    """Insert the readings of `rows` (no two with the same (kpi_id, reading_id)) that are
    not stored yet; return the indexes of those inserted, in key order."""
    # In key order: B-tree inserts with locality are faster.
    keyed: list[tuple[int, int]] = sorted(
        ((reading_key(r[0], r[1]), i) for i, r in enumerate(rows)), key=_first
    )
    insert = (
        f"INSERT INTO {table} (kpi_id, reading_id, value, observed_at, recorded_at,"
        " reading_key) VALUES (?, ?, ?, ?, ?, ?)"
    )
    # The common case, nothing stored yet and no two keys alike: one plain executemany.
    # A redelivery (or a key clash) violates the unique key: undo and sort them out.
    cur.execute("SAVEPOINT readings")
    try:
        cur.executemany(insert, [(*rows[i], k) for k, i in keyed])
    except cur.integrity_errors:
        cur.execute("ROLLBACK TO SAVEPOINT readings")
    else:
        cur.execute("RELEASE SAVEPOINT readings")
        return [i for _, i in keyed]
    cur.execute("RELEASE SAVEPOINT readings")
    new = _unstored(cur, table, rows, keyed)
    cur.executemany(insert, [(*rows[i], k) for k, i in new])
    return [i for _, i in new]


def _unstored(
    cur: Cursor, table: str, rows: Sequence[Reading], keyed: Sequence[tuple[int, int]]
) -> list[tuple[int | None, int]]:
    """The (key, index)s of `keyed` not stored yet; a reading whose key another reading
    holds (stored, or earlier here) gets a NULL key."""
    keys = [k for k, _ in keyed]
    holder: dict[int, tuple[str, str]] = {}
    for at in range(0, len(keys), _LOOKUP):
        chunk = keys[at : at + _LOOKUP]
        for key, kpi_id, reading_id in cur.execute(
            f"SELECT reading_key, kpi_id, reading_id FROM {table}"
            f" WHERE reading_key IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall():
            holder[int(key)] = (kpi_id, reading_id)
    new: list[tuple[int | None, int]] = []
    for key, i in keyed:
        ids = (rows[i][0], rows[i][1])
        held = holder.get(key)
        if held is None:
            holder[key] = ids
            new.append((key, i))
        elif held != ids and (
            cur.execute(
                f"SELECT 1 FROM {table} WHERE reading_key IS NULL AND kpi_id = ?"
                " AND reading_id = ?",
                ids,
            ).fetchone()
            is None
        ):
            new.append((None, i))
    return new

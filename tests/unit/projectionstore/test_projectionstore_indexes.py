"""Indexes of a projection generation: a store an older build made gets this build's."""

from __future__ import annotations

from pathlib import Path

from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema


def _indexes(db: Database, table: str) -> set[str]:
    with db.transaction(write=False) as cur:
        return {
            str(name)
            for (name,) in cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
            ).fetchall()
        }


def test_an_older_stores_key_result_index_is_replaced_at_start(tmp_path: Path) -> None:
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    # What builds before the covering fan-out index made: an index on kpi_id alone.
    with db.transaction() as cur:
        cur.execute("DROP INDEX g1_key_results_fanout")
        cur.execute("CREATE INDEX g1_key_results_kpi ON g1_key_results (kpi_id)")
    assert "g1_key_results_kpi" in _indexes(db, "g1_key_results")
    ensure_schema(db)  # what every process does at start
    found = _indexes(db, "g1_key_results")
    assert "g1_key_results_fanout" in found
    assert "g1_key_results_kpi" not in found
    assert "g1_objectives_period" in _indexes(db, "g1_objectives")
    ensure_schema(db)  # and again: idempotent
    assert _indexes(db, "g1_key_results") == found

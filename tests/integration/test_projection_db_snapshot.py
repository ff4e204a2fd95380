"""A projection store read (`transaction(write=False)`) sees one snapshot on either engine:
a view read in several statements never mixes two commits of the processor."""

from __future__ import annotations

import pytest

from services.projectionstore.db import Database
from services.settings import Settings

pytestmark = pytest.mark.integration


def test_a_read_sees_one_snapshot_while_a_writer_commits(settings: Settings) -> None:
    reader = Database.from_settings(settings, settings.projections_db_path)
    writer = Database.from_settings(settings, settings.projections_db_path)
    try:
        with writer.transaction() as cur:
            cur.execute("CREATE TABLE snap_objective (id TEXT PRIMARY KEY, score REAL)")
            cur.execute("CREATE TABLE snap_kr (id TEXT PRIMARY KEY, score REAL)")
            cur.execute("INSERT INTO snap_objective VALUES ('o', 0.5)")
            cur.execute("INSERT INTO snap_kr VALUES ('k', 0.5)")
        with reader.transaction(write=False) as cur:
            objective = cur.execute("SELECT score FROM snap_objective").fetchone()
            # The processor commits a new evaluation between the view's two statements.
            with writer.transaction() as w:
                w.execute("UPDATE snap_objective SET score = 1.0")
                w.execute("UPDATE snap_kr SET score = 1.0")
            kr = cur.execute("SELECT score FROM snap_kr").fetchone()
        assert (objective, kr) == ((0.5,), (0.5,))
        with reader.transaction(write=False) as cur:
            assert cur.execute("SELECT score FROM snap_kr").fetchone() == (1.0,)
        # A write transaction after a read on the same pooled connection reads the latest
        # commit at each statement again (PostgreSQL's default isolation).
        with reader.transaction() as cur:
            cur.execute("UPDATE snap_kr SET score = 0.25")
        with writer.transaction() as cur:
            assert cur.execute("SELECT score FROM snap_kr").fetchone() == (0.25,)
    finally:
        reader.close()
        writer.close()

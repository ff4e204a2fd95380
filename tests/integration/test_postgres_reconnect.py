"""PostgreSQL stores whose sessions the server ended (a restart, a failover) serve the next
transaction on a new connection, not with an error."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from services.eventstore.store import EventStore
from services.projectionstore.db import Database
from services.settings import Settings
from tests.support import postgres
from tests.support.samples import sample

pytestmark = pytest.mark.integration


def test_connections_the_server_ended_are_replaced_at_checkout(tmp_path: Path) -> None:
    with postgres.fresh_database() as url:
        settings = Settings(data_dir=tmp_path, database_url=url)  # type: ignore[arg-type]
        db = Database.from_settings(settings, tmp_path / "unused.sqlite")
        try:
            with db.transaction() as cur:
                cur.execute("CREATE TABLE t (x INTEGER)")
                cur.execute("INSERT INTO t VALUES (1)")
            _end_sessions(url)  # the pool's idle connection
            for _ in range(3):
                with db.transaction(write=False) as cur:
                    assert cur.execute("SELECT x FROM t").fetchall() == [(1,)]
        finally:
            db.close()


def test_the_event_store_replaces_connections_the_server_ended(tmp_path: Path) -> None:
    with postgres.fresh_database() as url:
        store = EventStore.from_settings(Settings(data_dir=tmp_path, database_url=url))  # type: ignore[arg-type]
        try:
            store.append([sample("objective.drafted")])
            _end_sessions(url)
            store.append([sample("objective.drafted")])
            assert store.max_position() == 2
        finally:
            store.close()


def _end_sessions(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.ADMIN_URL, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert ended is not None
    assert ended[0] >= 1

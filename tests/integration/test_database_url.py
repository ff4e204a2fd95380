"""An OKR_DATABASE_URL whose password or database name holds spaces and quotes (percent-
encoded, as a URL must) reaches every store: tokens, projections and the event store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from services.auth.tokens import TokenStore
from services.eventstore import EventStore
from services.projectionstore.db import Database
from services.settings import Settings
from tests.support.postgres import ADMIN_URL

pytestmark = pytest.mark.integration

PASSWORD = 'it\'s a "pass\\word"'  # trust auth on the test server: any password is taken


@pytest.fixture
def awkward_database() -> Iterator[str]:
    """A database named with a space and a quote, dropped afterwards; yields its name."""
    name = f"okr test's {uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _url(dbname: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]  # postgresql://user@host:port
    user, _, host = base.removeprefix("postgresql://").rpartition("@")
    return f"postgresql://{user}:{quote(PASSWORD, safe='')}@{host}/{quote(dbname, safe='')}"


def test_every_store_opens_with_spaces_and_quotes_in_the_url(
    tmp_path: Path, awkward_database: str
) -> None:
    url = _url(awkward_database)
    env = {**os.environ, "OKR_DATA_DIR": str(tmp_path), "OKR_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "token", "create", "--org", "acme"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    token = done.stdout.strip()
    settings = Settings(data_dir=tmp_path, database_url=url)
    tokens = TokenStore.from_settings(settings)
    try:
        principal = tokens.verify(token)
    finally:
        tokens.close()
    assert principal is not None
    assert principal.org_id == "acme"
    projections = Database.from_settings(settings, tmp_path / "unused.sqlite")
    try:
        with projections.transaction(write=False) as cur:
            row = cur.execute("SELECT current_database()").fetchone()
    finally:
        projections.close()
    assert row is not None
    assert row[0] == awkward_database
    EventStore.from_settings(settings).close()
    assert not list(tmp_path.glob("*.sqlite")), "nothing may fall back to SQLite"

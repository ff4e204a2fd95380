"""An unreachable or missing PostgreSQL gives one clear message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.eventstore.store import EventStore, StoreUnavailableError
from services.projectionstore.db import Database, DatabaseUnavailableError
from services.settings import Settings
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def test_unreachable_server_is_named_in_the_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(
        data_dir=tmp_path, database_url=f"postgresql://okr:s3cret@127.0.0.1:{port}/okr"
    )
    with pytest.raises(DatabaseUnavailableError) as raised:
        Database.from_settings(settings, tmp_path / "unused.sqlite")
    message = str(raised.value)
    assert f"127.0.0.1:{port}/okr is unreachable" in message
    assert "s3cret" not in message
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        EventStore.from_settings(settings)


def test_cli_says_what_is_wrong_without_a_traceback(tmp_path: Path, pg_database: str) -> None:
    missing = pg_database.rsplit("/", 1)[0] + "/no_such_database"
    env = {**os.environ, "OKR_DATA_DIR": str(tmp_path), "OKR_DATABASE_URL": missing}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", "verify"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no_such_database" in done.stderr
    assert "does not exist" in done.stderr

"""An unreachable or missing PostgreSQL gives one clear message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
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


def test_cli_names_the_variable_of_a_malformed_url_without_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:54x2/db",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", "verify"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "OKR_DATABASE_URL=" in done.stderr
    assert "port '54x2'" in done.stderr
    assert "s3cret" not in done.stderr


def test_a_missing_schema_is_named_not_reported_as_a_timeout(
    tmp_path: Path, pg_database: str
) -> None:
    schema = f"nosuch_{uuid.uuid4().hex[:8]}"
    url = f"{pg_database}?schema={schema}"
    settings = Settings(data_dir=tmp_path, database_url=url)
    with pytest.raises(DatabaseUnavailableError) as raised:
        Database.from_settings(settings, tmp_path / "unused.sqlite")
    assert f"no schema '{schema}'" in str(raised.value)
    with pytest.raises(StoreUnavailableError) as store_raised:
        EventStore.from_settings(settings)
    assert f"no schema '{schema}'" in str(store_raised.value)
    assert "time out" not in str(store_raised.value)
    env = {**os.environ, "OKR_DATA_DIR": str(tmp_path), "OKR_DATABASE_URL": url}
    for command in (["audit", "verify"], ["token", "create", "--org", "acme"]):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *command],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert f"no schema '{schema}'" in done.stderr

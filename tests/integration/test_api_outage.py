"""The API started while its PostgreSQL refuses connections: it waits for the database
instead of exiting (the supervisor gives the stack up after five exits within a minute),
then serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import postgres
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def _admin(sql: str) -> None:
    with psycopg.connect(postgres.ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def test_api_started_while_postgresql_refuses_waits_for_it(tmp_path: Path) -> None:
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    port = free_port()
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(tmp_path / "data"),
        "OKR_DATABASE_URL": url,
        "OKR_HTTP_PORT": str(port),
        "OKR_HTTP_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "api.log"
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    api: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "services.api.main"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "a store is unavailable" not in log.read_text():
            assert api.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(1)
        assert api.poll() is None, log.read_text()[-3000:]
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 60
        while True:
            assert api.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    finally:
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        if api is not None and api.poll() is None:
            api.terminate()
            api.wait(20)
        postgres.drop_database(url)

"""The API started while its PostgreSQL refuses connections: it waits for the database
instead of exiting (the supervisor gives the stack up after five exits within a minute),
then serves."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import postgres
from tests.support.ports import free_port
from tests.support.processes import wait_for_log

pytestmark = pytest.mark.integration


def test_api_started_while_postgresql_refuses_waits_for_it(tmp_path: Path) -> None:
    with postgres.fresh_database() as url:
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
        api: subprocess.Popen[bytes] | None = None
        try:
            with postgres.refusing_connections(url):
                with log.open("wb") as out:
                    api = subprocess.Popen(
                        [sys.executable, "-m", "services.api.main"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                wait_for_log(log, "a store is unavailable", api)
                time.sleep(1)
                assert api.poll() is None, log.read_text()[-3000:]
            deadline = time.monotonic() + 60
            while True:
                assert api.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
        finally:
            if api is not None and api.poll() is None:
                api.terminate()
                api.wait(20)

"""The API started while its PostgreSQL refuses connections: it waits for the database
instead of exiting (the supervisor gives the stack up after five exits within a minute),
then serves."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import postgres
from tests.support.ports import free_port
from tests.support.processes import wait_for_log

pytestmark = pytest.mark.integration


def _start_api(
    tmp_path: Path, url: str, port: int, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """`python -m services.api.main` on `url` and `port`, in a session of its own, its
    output in `log`."""
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(tmp_path / "data"),
        "OKR_DATABASE_URL": url,
        "OKR_HTTP_PORT": str(port),
        "OKR_HTTP_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.api.main"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_api_started_while_postgresql_refuses_waits_for_it(tmp_path: Path) -> None:
    with postgres.fresh_database() as url:
        port = free_port()
        log = tmp_path / "api.log"
        api: subprocess.Popen[bytes] | None = None
        try:
            with postgres.refusing_connections(url):
                api = _start_api(tmp_path, url, port, log)
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


def test_api_workers_waiting_for_the_database_stop_on_sigterm(tmp_path: Path) -> None:
    """With several workers, uvicorn's handlers only flag a shutdown, which the wait for the
    database never looked at: the workers outlived SIGTERM until killed."""
    with postgres.fresh_database() as url, postgres.refusing_connections(url):
        log = tmp_path / "api.log"
        api = _start_api(tmp_path, url, free_port(), log, OKR_HTTP_WORKERS="2")
        try:
            wait_for_log(log, "a store is unavailable", api)
            children = psutil.Process(api.pid).children(recursive=True)
            api.send_signal(signal.SIGTERM)
            api.wait(15)  # TimeoutExpired if the stop is not heeded
            _, alive = psutil.wait_procs(children, timeout=10)
            assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(api.pid, signal.SIGKILL)


@pytest.mark.parametrize("service", ["services.api.main", "services.relay.main"])
def test_a_database_that_does_not_exist_is_said_at_once(tmp_path: Path, service: str) -> None:
    """Waiting cannot create a database: a service started against one that does not exist
    exits with the reason instead of waiting for it."""
    missing = postgres.ADMIN_URL.rsplit("/", 1)[0] + "/no_such_database_here"
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(tmp_path / "data"),
        "OKR_DATABASE_URL": missing,
        "OKR_HTTP_PORT": str(free_port()),
        "OKR_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "no_such_database_here" in done.stderr
    assert "does not exist" in done.stderr
    assert "retrying" not in done.stdout + done.stderr

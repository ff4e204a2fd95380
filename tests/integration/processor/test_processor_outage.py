"""The processor started while its PostgreSQL projection store refuses connections: it waits
for the database instead of exiting (the supervisor gives the stack up after five exits
within a minute), then starts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.integration.processor.harness import ProcessorProcess
from tests.support import postgres

pytestmark = pytest.mark.integration


def _admin(sql: str) -> None:
    with psycopg.connect(postgres.ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def test_processor_started_while_postgresql_refuses_waits_for_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    log = tmp_path / "processor.log"
    proc = ProcessorProcess(settings, broker.bootstrap, f"outage-{uuid.uuid4().hex[:8]}", log)
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        proc.start()
        process = proc.proc
        assert process is not None

        def until(text: str) -> None:
            deadline = time.monotonic() + 60
            while text not in log.read_text():
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no {text!r}: {log.read_text()[-3000:]}"
                time.sleep(0.1)

        until("projection store unavailable")
        time.sleep(1)
        assert process.poll() is None, log.read_text()[-3000:]
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        until("processor started")
    finally:
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        proc.stop()
        postgres.drop_database(url)

"""The processor started while its PostgreSQL projection store refuses connections: it waits
for the database instead of exiting (the supervisor gives the stack up after five exits
within a minute), then starts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.integration.processor.harness import ProcessorProcess
from tests.support import postgres
from tests.support.processes import wait_for_log

pytestmark = pytest.mark.integration


def test_processor_started_while_postgresql_refuses_waits_for_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    with postgres.fresh_database() as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url)
        log = tmp_path / "processor.log"
        group = f"outage-{uuid.uuid4().hex[:8]}"
        proc = ProcessorProcess(settings, broker.bootstrap, group, log)
        try:
            with postgres.refusing_connections(url):
                proc.start()
                assert proc.proc is not None
                wait_for_log(log, "projection store unavailable", proc.proc)
                time.sleep(1)
                assert proc.proc.poll() is None, log.read_text()[-3000:]
            wait_for_log(log, "processor started", proc.proc)
        finally:
            proc.stop()

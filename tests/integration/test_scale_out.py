"""Scale-out on one machine: two processor workers and two API replicas on one broker and one
PostgreSQL. Killing a worker moves its partitions to the other; the projections equal a
clean single-pass replay (content hash); both API replicas serve the same views."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.auth.tokens import TokenStore
from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.conftest import make_settings
from tests.integration.processor.harness import (
    ProcessorProcess,
    count_readings,
    live_hash,
    produce,
    projection_db,
    relay_records,
    replay_hash,
    store_events,
    wait_for_position,
)
from tests.support.ports import free_port
from tests.unit.processor.builders import Log, synthetic

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_settings(pg_database: str, tmp_path: Path) -> Settings:
    return make_settings("postgres", tmp_path / "data", pg_database)


def _api_replica(
    settings: Settings, tmp_path: Path, name: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "OKR_DATA_DIR": str(tmp_path / name),
        "OKR_DATABASE_URL": str(settings.database_url),
        "OKR_HTTP_PORT": str(port),
        "OKR_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    log = (tmp_path / f"{name}.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "services.api.main"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError(
        f"API replica {name} did not start: {(tmp_path / f'{name}.log').read_text()}"
    )


def test_killed_worker_hands_over_and_replicas_agree(
    pg_settings: Settings, fresh_broker: EmbeddedBroker, unique_group: str, tmp_path: Path
) -> None:
    workers = [
        ProcessorProcess(pg_settings, fresh_broker.bootstrap, unique_group, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    time.sleep(3)  # both join before data arrives, so each owns half the partitions

    log = Log()
    synthetic(log, objectives=40, kpis=8, readings=20_000)
    entries = store_events(pg_settings, [e for _, e in log.entries])
    last = entries[-1][0]
    produce(fresh_broker.bootstrap, relay_records(entries, per_record=50), last, 4)

    deadline = time.monotonic() + 60
    while count_readings(pg_settings) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers[0].kill()  # its partitions must move to the survivor
    survivor = workers[1]
    db = projection_db(pg_settings)
    try:
        wait_for_position(db, last, 4, procs=[survivor], timeout_s=180)
        live = live_hash(db)
    finally:
        survivor.stop()
        db.close()

    assert replay_hash(pg_settings) == live  # a single pass over the log, fresh generation

    tokens = TokenStore.from_settings(pg_settings)
    token = tokens.create("acme", ["read"])
    tokens.close()
    replicas = [_api_replica(pg_settings, tmp_path, f"api{i}") for i in range(2)]
    try:
        views = []
        for _, url in replicas:
            answer = httpx.get(
                f"{url}/v1/objectives",
                params={"limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            views.append(sorted((o["id"], o["score"], o["version"]) for o in items))
        assert views[0] == views[1]
        assert len(views[0]) == 40
    finally:
        for server, _ in replicas:
            server.terminate()
            server.wait(10)

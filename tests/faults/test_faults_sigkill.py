"""Fault injection: SIGKILL each process of the running stack while writes flow.

Afterwards every accepted (2xx) reading and command is in the projections, nothing is
counted twice, the projections equal a clean replay (content hash), hash chains verify.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from services.processor.digest import content_hash
from services.projectionstore.db import Database
from services.projectionstore.meta import live_generation
from services.projectionstore.schema import Tables
from services.settings import Settings
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


class Flow:
    """Readings and check-ins posted in a loop; only 2xx answers count as accepted.

    A request that fails without an answer is retried with the same reading ids and the
    same Idempotency-Key, as a real integration would: nothing may then count twice.
    """

    def __init__(self, url: str, token: str, kpi_id: str, objective_id: str, kr_id: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=15
        )
        self.kpi_id, self.objective_id, self.kr_id = kpi_id, objective_id, kr_id
        self.reading_ids: set[str] = set()
        self.checkins = 0
        self.highest_position = 0
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _until_accepted(self, send) -> httpx.Response:  # type: ignore[no-untyped-def]
        while True:
            try:
                answer = send()
                if answer.status_code < 500:
                    return answer
            except httpx.HTTPError:
                pass
            self.failures += 1
            time.sleep(0.2)

    def _loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            ids = [f"f-{n}-{i}" for i in range(20)]
            body = {
                "readings": [
                    {
                        "kpi_id": self.kpi_id,
                        "value": 1.0,
                        "observed_at": datetime.now(UTC).isoformat(),
                        "reading_id": rid,
                    }
                    for rid in ids
                ]
            }
            answer = self._until_accepted(lambda b=body: self.client.post("/v1/readings", json=b))
            assert answer.status_code == 202, answer.text
            self.reading_ids.update(ids)
            self.highest_position = max(self.highest_position, answer.json()["position"])
            if n % 5 == 0:
                key = uuid.uuid4().hex
                path = f"/v1/objectives/{self.objective_id}/key-results/{self.kr_id}/check-ins"
                answer = self._until_accepted(
                    lambda k=key, p=path, v=float(n): self.client.post(
                        p, json={"value": v}, headers={"Idempotency-Key": k}
                    )
                )
                assert answer.status_code == 201, answer.text
                self.checkins += 1
                self.highest_position = max(self.highest_position, answer.json()["position"])
            n += 1
            time.sleep(0.05)


def _seed(client: httpx.Client) -> tuple[str, str, str]:
    kpi = client.post(
        "/v1/kpis",
        json={"name": "Tickets", "direction": "increase", "target": 10_000,
              "interval": "month", "aggregation": "count"},
    )  # fmt: skip
    assert kpi.status_code == 201, kpi.text
    objective = client.post(
        "/v1/objectives",
        json={"title": "Survive chaos", "owner": "ops", "level": "team",
              "period": {"start": "2026-01-01", "end": "2026-12-31"}},
    )  # fmt: skip
    assert objective.status_code == 201, objective.text
    oid = objective.json()["id"]
    linked = client.post(
        f"/v1/objectives/{oid}/key-results",
        json={"title": "Tickets handled", "kind": "metric", "start": 0, "target": 10_000,
              "kpi_id": kpi.json()["id"], "aggregation": "count"},
    )  # fmt: skip
    assert linked.status_code == 201, linked.text
    manual = client.post(
        f"/v1/objectives/{oid}/key-results",
        json={"title": "Manual", "kind": "metric", "start": 0, "target": 100},
    )
    assert manual.status_code == 201, manual.text
    return kpi.json()["id"], oid, manual.json()["id"]


def _kill(stack: Stack, name: str) -> None:
    pid = stack.child_pid(name)
    psutil.Process(pid).kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stack.child_pid(name) != pid:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} was not restarted:\n{''.join(stack.lines)}")


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OKR_DATA_DIR": str(data_dir)}
    env.pop("OKR_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _projection_hash(data_dir: Path) -> dict[str, str]:
    settings = Settings(data_dir=data_dir)
    db = Database.from_settings(settings, settings.projections_db_path)
    try:
        with db.transaction(write=False) as cur:
            return content_hash(cur, Tables(live_generation(cur)))
    finally:
        db.close()


def test_sigkill_every_process_while_writes_flow(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Stack(data_dir) as stack:
        token = stack.dev_token()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=15) as client:
            kpi_id, objective_id, kr_id = _seed(client)
        flow = Flow(stack.url, token, kpi_id, objective_id, kr_id)
        flow.thread.start()
        for name in ("api", "relay", "processor", "broker"):
            time.sleep(2.5)
            _kill(stack, name)
        time.sleep(2.5)
        flow.stop.set()
        flow.thread.join(60)
        assert not flow.thread.is_alive()
        assert flow.failures > 0, "killing the API must have interrupted some requests"

        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                kpi = client.get(
                    f"/v1/kpis/{kpi_id}", params={"min_position": flow.highest_position}
                )
                if kpi.status_code == 200 or time.monotonic() > deadline:
                    break
            assert kpi.status_code == 200, kpi.text
            series = client.get(f"/v1/kpis/{kpi_id}/series").json()
            objective = client.get(f"/v1/objectives/{objective_id}").json()
            raw_events = client.get(f"/v1/objectives/{objective_id}/events").json()

        # Every accepted reading once, none twice.
        assert sum(b["count"] for b in series["items"]) == len(flow.reading_ids)
        linked = next(k for k in objective["key_results"] if k["kpi_id"] == kpi_id)
        assert linked["current"] == len(flow.reading_ids)
        # Every accepted check-in once.
        kinds = [e["type"] for e in raw_events["items"]]
        assert kinds.count("key_result.checked_in") == flow.checkins

        before = _projection_hash(data_dir)
        replay = _cli(data_dir, "replay")
        assert replay.returncode == 0, replay.stderr
        assert _projection_hash(data_dir) == before

        verify = _cli(data_dir, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr

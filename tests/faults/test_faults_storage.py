"""Fault injection: the store's disk full or read-only, and the broker unreachable.

A full or read-only disk gives a clear 503 problem on writes while reads keep working, and
writes come back when the disk does. With the broker frozen, ingest keeps accepting into the
store and the relay catches up afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of this test only (the machine's tests run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextmanager
def serve(data: Path, token: str | None = None) -> Iterator[tuple[str, str]]:
    """The HTTP front door alone (no broker needed for writes) on `data`."""
    env = {**os.environ, "OKR_DATA_DIR": str(data), "OKR_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    env.pop("OKR_DATABASE_URL", None)
    token = token or subprocess.run(
        [sys.executable, "-m", "services.cli.main", "token", "create", "--org", "disk",
         "--scopes", "read,write,ingest"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    env["OKR_HTTP_PORT"] = str(port)
    server = subprocess.Popen([sys.executable, "-m", "services.api.main"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url, token
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def front_door(small_disk: Path) -> Iterator[tuple[str, str]]:
    with serve(small_disk / "data") as running:
        yield running


def _readings(kpi_id: str, n: int = 50) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "readings": [
            {"kpi_id": kpi_id, "value": float(i), "observed_at": now, "reading_id": uuid4().hex}
            for i in range(n)
        ]
    }


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


def test_disk_full_gives_503_on_writes_reads_keep_working_and_writes_come_back(
    small_disk: Path, front_door: tuple[str, str]
) -> None:
    url, token = front_door
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        kpi = client.post(
            "/v1/kpis",
            json={"name": "Disk", "direction": "increase", "target": 1, "interval": "day",
                  "aggregation": "sum"},
        )  # fmt: skip
        assert kpi.status_code == 201, kpi.text
        kpi_id = kpi.json()["id"]
        assert client.post("/v1/readings", json=_readings(kpi_id)).status_code == 202
        assert client.get("/v1/objectives").status_code == 200  # the read side is open

        filler = _fill(small_disk)
        full = client.post("/v1/readings", json=_readings(kpi_id, 2000))
        assert full.status_code == 503, full.text
        assert full.headers["content-type"].startswith("application/problem+json")
        assert "unavailable" in full.json()["detail"]
        command = client.post(
            "/v1/objectives",
            json={"title": "x" * 200, "owner": "o", "level": "team", "description": "y" * 9000,
                  "period": {"start": "2026-01-01", "end": "2026-03-31"}},
        )  # fmt: skip
        assert command.status_code == 503, command.text
        assert client.get("/v1/objectives").status_code == 200
        assert client.get("/healthz").status_code == 200

        filler.unlink()
        assert client.post("/v1/readings", json=_readings(kpi_id)).status_code == 202


def test_read_only_store_gives_503_on_writes_and_reads_keep_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with (
        serve(data) as (url, token),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        kpi = client.post(
            "/v1/kpis",
            json={"name": "RO", "direction": "increase", "target": 1, "interval": "day",
                  "aggregation": "sum"},
        )  # fmt: skip
        kpi_id = kpi.json()["id"]
        assert client.post("/v1/readings", json=_readings(kpi_id)).status_code == 202
        assert client.get("/v1/objectives").status_code == 200
    frozen = [p for p in data.iterdir() if p.suffix == ".sqlite"]
    subprocess.run(["chattr", "+i", *map(str, frozen)], check=True)  # even root cannot write
    try:
        with (
            serve(data, token) as (url, _),
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            read_only = client.post("/v1/readings", json=_readings(kpi_id))
            assert read_only.status_code == 503, read_only.text
            assert read_only.headers["content-type"].startswith("application/problem+json")
            assert read_only.headers["retry-after"]
            assert client.get("/v1/objectives").status_code == 200
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)


def test_broker_unreachable_ingest_keeps_accepting_and_the_relay_catches_up(
    tmp_path: Path,
) -> None:
    with Stack(tmp_path / "data") as stack:
        token = stack.dev_token()
        with httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            kpi = client.post(
                "/v1/kpis",
                json={"name": "Outage", "direction": "increase", "target": 1,
                      "interval": "month", "aggregation": "count"},
            )  # fmt: skip
            kpi_id = kpi.json()["id"]
            broker = next(p for p in stack.descendants() if p.name().startswith("tansu"))
            broker.suspend()  # SIGSTOP: connections hang, nothing answers
            try:
                accepted = 0
                position = 0
                for _ in range(10):
                    answer = client.post("/v1/readings", json=_readings(kpi_id, 100))
                    assert answer.status_code == 202, answer.text
                    accepted += answer.json()["accepted"]
                    position = answer.json()["position"]
                    time.sleep(0.3)
                stalled = client.get(f"/v1/kpis/{kpi_id}", params={"min_position": position})
                assert stalled.status_code in (404, 503)
            finally:
                broker.resume()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                view = client.get(f"/v1/kpis/{kpi_id}", params={"min_position": position})
                if view.status_code == 200:
                    break
            assert view.status_code == 200, view.text
            series = client.get(f"/v1/kpis/{kpi_id}/series").json()["items"]
            assert sum(b["count"] for b in series) == accepted == 1000

"""`okrstream up`: starts the broker under supervision; SIGTERM leaves no orphan."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from contracts.topics import ALL_TOPICS
from services.kafka.admin import topic_partitions
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_up_starts_the_broker_and_sigterm_stops_everything(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "data").start()
    try:
        children = stack.descendants()
        assert children, "the supervisor runs its services as child processes"
        topics = topic_partitions(stack.bootstrap)
        assert all(spec.name in topics for spec in ALL_TOPICS)
        assert (tmp_path / "data" / "logs" / "broker.log").exists()
        pids = [c.pid for c in children]
    finally:
        code = stack.stop()
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == [], f"orphans left behind: {alive}"


def test_a_crashed_service_is_announced_and_restarted(tmp_path: Path) -> None:
    with Stack(tmp_path / "data") as stack:
        pid = stack.child_pid("broker")
        psutil.Process(pid).kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            "restarting" in line and "broker" in line for line in stack.lines
        ):
            time.sleep(0.2)
        assert any("WARNING broker exited" in line for line in stack.lines), stack.lines
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(s.name in topic_partitions(stack.bootstrap) for s in ALL_TOPICS):
                    break
            except Exception:
                time.sleep(0.3)
        assert all(s.name in topic_partitions(stack.bootstrap) for s in ALL_TOPICS)

"""`okrstream up`: starts the broker under supervision; SIGTERM/SIGINT stop it promptly and
leave no orphan, even with an SSE stream open or a service that ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from fastapi import FastAPI

from contracts.topics import ALL_TOPICS
from services.kafka.admin import topic_partitions
from services.settings import Settings
from services.supervisor import up
from services.supervisor.up import STOP_TIMEOUT_S, Child, PortInUseError, Supervisor, port_in_use
from tests.support.ports import free_port
from tests.support.serving import serve
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


def _listen(
    url: str, token: str, connected: threading.Event, ended: threading.Event, seen: list[str]
) -> None:
    """Hold an SSE stream open (as the dashboard does) until the server ends it."""
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            seen.append(f"status {response.status_code}")
            for line in response.iter_lines():
                if line == ": connected":
                    connected.set()
    except httpx.HTTPError as exc:
        seen.append(repr(exc))
    finally:
        ended.set()


def test_sigint_with_an_open_stream_stops_promptly_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    # Two workers: uvicorn's manager, its spawned workers and their resource tracker.
    stack = Stack(tmp_path / "data", OKR_HTTP_WORKERS="2").start()
    connected, ended = threading.Event(), threading.Event()
    seen: list[str] = []
    try:
        listener = threading.Thread(
            target=_listen,
            args=(f"{stack.url}/v1/stream", stack.dev_token(), connected, ended, seen),
            daemon=True,
        )
        listener.start()
        assert connected.wait(30), f"the stream did not open: {seen}"
        pids = [p.pid for p in stack.descendants()]
        assert stack.process is not None
        started = time.monotonic()
        stack.process.send_signal(signal.SIGINT)  # Ctrl-C
        code = stack.process.wait(STOP_TIMEOUT_S + 20)
        took = time.monotonic() - started
    finally:
        stack.stop()
    assert code == 0, "".join(stack.lines)
    # Well under the point where a stuck child would be SIGKILLed.
    assert took < STOP_TIMEOUT_S - 2, f"stopping took {took:.1f} s:\n{''.join(stack.lines)}"
    assert ended.wait(5), "the stream is still open after the stack stopped"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pids):
        time.sleep(0.1)
    assert _alive(pids) == [], "processes outlived the supervisor"


def _alive(pids: list[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(process.cmdline()[-3:])}")
        except psutil.NoSuchProcess:
            pass
    return alive


# A service that ignores SIGTERM and has a child (a worker) that ignores it too.
_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(worker.pid, flush=True)
time.sleep(120)
"""


def _worker_pid(log: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = log.read_text().strip() if log.exists() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the service printed no worker pid")


def test_a_child_that_ignores_sigterm_is_killed_with_its_whole_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "STOP_TIMEOUT_S", 0.5)
    child = Child("stubborn", [sys.executable, "-c", _STUBBORN], tmp_path / "s.log", {})
    child.start()
    worker = _worker_pid(tmp_path / "s.log")
    started = time.monotonic()
    child.stop()
    assert time.monotonic() - started < 5
    assert _alive([worker]) == [], "the service's own child was orphaned"


def test_a_crashed_childs_leftover_processes_are_killed_before_a_restart(tmp_path: Path) -> None:
    # A service whose main process died (as a crashed uvicorn manager would) while its
    # worker lives on: the restart must not leave the worker holding the port.
    child = Child("crashed", [sys.executable, "-c", _STUBBORN], tmp_path / "c.log", {})
    child.start()
    worker = _worker_pid(tmp_path / "c.log")
    assert child.process is not None
    child.process.kill()
    child.process.wait()
    child.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive([worker]):
        time.sleep(0.05)
    assert _alive([worker]) == [], "the crashed service's worker was left running"


def _impostor() -> FastAPI:
    """Another server, healthy by its own account."""
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.mark.parametrize("variable", ["OKR_HTTP_PORT", "OKR_KAFKA_PORT"])
def test_up_stops_at_once_naming_a_port_another_process_holds(
    tmp_path: Path, variable: str
) -> None:
    """Before: up started everything, took the other server's /healthz for its own API,
    printed "okrstream is up" and a dev token that server does not know, and gave up ten
    seconds later when its API could not bind."""
    with serve(_impostor()) as url:
        taken = urlsplit(url).port
        env = {
            **os.environ,
            "OKR_DATA_DIR": str(tmp_path / "data"),
            "OKR_HTTP_PORT": str(free_port()),
            "OKR_KAFKA_PORT": str(free_port()),
            variable: str(taken),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("OKR_KAFKA_BOOTSTRAP", None)
        env.pop("OKR_DATABASE_URL", None)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "up"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert f"ERROR port {taken} on 127.0.0.1 ({variable}) is already in use" in lines[0]
    assert done.stdout == "", "an error goes to stderr"
    assert "Traceback" not in output
    assert "is up" not in output
    assert "dev token" not in output
    assert took < 30, f"took {took:.1f} s"
    assert not (tmp_path / "data").exists(), "nothing is started (or written) for a stack"


def test_another_server_answering_on_the_port_is_not_taken_for_the_api(tmp_path: Path) -> None:
    """The port was free when up checked it, then another server took it: its /healthz is
    not ours. An API process that is not listening is not ready; one that exited (it could
    not bind) stops the stack naming the port."""
    with serve(_impostor()) as url:
        port = urlsplit(url).port
        assert port is not None
        assert port_in_use("127.0.0.1", port)
        supervisor = Supervisor(Settings(data_dir=tmp_path, http_port=port), lambda m: None)
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        waiting = Child("api", sleeper, tmp_path / "waiting.log", {})
        waiting.start()
        supervisor.children.append(waiting)
        try:
            assert supervisor.wait_http_ready(timeout_s=2) is False
        finally:
            waiting.stop()
        exits = [sys.executable, "-c", "raise SystemExit(3)"]
        crashed = Child("api", exits, tmp_path / "crashed.log", {})
        crashed.start()
        supervisor.children[:] = [crashed]
        try:
            with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1"):
                supervisor.wait_http_ready(timeout_s=20)
        finally:
            crashed.stop()

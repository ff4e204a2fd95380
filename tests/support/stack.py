"""Run `okrstream up` as a subprocess on free ports, for end-to-end and fault tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import psutil

from services.settings import Settings
from tests.support.ports import free_port

READY = "ready; Ctrl-C stops everything"


class Stack:
    """The embedded stack in a child process; `lines` collects its stdout."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.kafka_port = free_port()
        self.env = {
            **os.environ,
            "OKR_DATA_DIR": str(data_dir),
            "OKR_HTTP_PORT": str(self.http_port),
            "OKR_KAFKA_PORT": str(self.kafka_port),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.env.pop("OKR_KAFKA_BOOTSTRAP", None)
        if database_url:
            self.env["OKR_DATABASE_URL"] = database_url
        else:
            self.env.pop("OKR_DATABASE_URL", None)
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def settings(self) -> Settings:
        """Settings that reach this stack's stores (for tokens and direct checks)."""
        return Settings(data_dir=self.data_dir, database_url=self.env.get("OKR_DATABASE_URL"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, timeout_s: float = 90.0) -> Stack:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(READY in line for line in self.lines):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        output = "".join(self.lines)
        self.stop()
        raise RuntimeError(f"okrstream up did not become ready:\n{output}")

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def dev_token(self) -> str:
        for line in self.lines:
            found = re.search(r"dev token .*: (\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError("okrstream up printed no dev token")

    def descendants(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def child_pid(self, name: str) -> int:
        """pid of the supervised service `name` (from the supervisor's start line)."""
        for line in reversed(self.lines):
            found = re.search(rf"started {name} \(pid (\d+)\)", line)
            if found:
                return int(found.group(1))
        raise AssertionError(f"no service {name} was started")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                for child in self.descendants():
                    child.kill()
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

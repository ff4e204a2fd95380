"""`okrstream up`: start the embedded broker and every service, supervise, stop cleanly.

Each service is its own process, logging to OKR_DATA_DIR/logs/<name>.log. A process that
exits unexpectedly is announced and restarted (never silently); more than MAX_RESTARTS
within RESTART_WINDOW_S stops the whole stack. SIGINT/SIGTERM stop everything, newest first.
Each service runs in a session (process group) of its own: a service that does not stop
within STOP_TIMEOUT_S is SIGKILLed with everything it started (uvicorn's workers, say), and
whatever a stopped or crashed service left behind in its group is killed too. Children get
PR_SET_PDEATHSIG, so even a SIGKILLed supervisor leaves no orphan.

A port the stack would listen on (OKR_HTTP_PORT; OKR_KAFKA_PORT for the embedded broker)
that another process holds stops `up` before anything starts, naming the port. The stack is
reported up only once its own API process listens on the port and answers /healthz: a
server that got the port in between is not taken for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs in the dev dependencies

from services.kafka.admin import ensure_topics, wait_for_broker
from services.settings import Settings, load_settings

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_TIMEOUT_S = 10.0


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the child gets SIGTERM when we die.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=_die_with_parent,
            # Its own session: Ctrl-C reaches only the supervisor, which then stops the
            # services newest first (the relay flushes while the broker is still up); and
            # its own process group, which stop() can kill whole.
            start_new_session=True,
        )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> bool:
        """SIGTERM the service and give it STOP_TIMEOUT_S seconds; then SIGKILL its process
        group, which ends the service if it is still running and anything it started that
        outlived it. Returns whether the service itself had to be killed."""
        killed = False
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    killed = True
            # The group is the service's pid (start_new_session), and that number is not
            # reused while any member of the group lives: this reaches only what it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return killed


class PortInUseError(Exception):
    """A port the stack must listen on is held by another process."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (or holds) `host`:`port`, so that our server could not
    bind it. SO_REUSEADDR as uvicorn and the broker bind: a closed connection lingering in
    TIME_WAIT from a previous run does not count."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unknown host: the server's own error says so
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def _in_use_message(host: str, port: int, variable: str) -> str:
    return (
        f"port {port} on {host} ({variable}) is already in use by another process: "
        f"stop it, or set {variable} to a free port"
    )


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` or one of its descendants (uvicorn's workers) listens on
    `port`."""
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.Error:
        return False
    return False


def service_modules(settings: Settings) -> list[tuple[str, str]]:
    """(name, module) of every service process this checkout has, in start order."""
    wanted = [
        ("broker", "services.broker.embedded"),
        ("relay", "services.relay.main"),
        ("processor", "services.processor.main"),
        ("api", "services.api.main"),
    ]
    if not settings.embedded_broker:
        wanted = wanted[1:]
    return [(n, m) for n, m in wanted if _exists(m)]


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is not there either
        return False


class Supervisor:
    """Runs the stack until told to stop."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.children: list[Child] = []
        self.stopping = False
        env = dict(os.environ)
        env["OKR_KAFKA_BOOTSTRAP"] = settings.bootstrap_servers
        env["OKR_DATA_DIR"] = str(settings.data_dir.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        self.child_env = env

    def _child(self, name: str, module: str) -> Child:
        env = dict(self.child_env)
        if name == "broker":
            env.pop("OKR_KAFKA_BOOTSTRAP")
        return Child(
            name=name,
            argv=[sys.executable, "-m", module],
            log_path=self.settings.logs_dir / f"{name}.log",
            env=env,
        )

    def check_ports(self) -> None:
        """PortInUseError when a port this stack listens on is taken: say so at once, rather
        than start services that cannot bind it (or take another server for our own)."""
        names = {name for name, _module in service_modules(self.settings)}
        wanted = []
        if "api" in names:
            wanted.append((self.settings.http_host, self.settings.http_port, "OKR_HTTP_PORT"))
        if "broker" in names:
            wanted.append(("127.0.0.1", self.settings.kafka_port, "OKR_KAFKA_PORT"))
        for host, port, variable in wanted:
            if port_in_use(host, port):
                raise PortInUseError(_in_use_message(host, port, variable))

    def start(self) -> None:
        self.check_ports()
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        for name, module in service_modules(self.settings):
            child = self._child(name, module)
            child.start()
            self.children.append(child)
            if name == "broker":
                wait_for_broker(self.settings.bootstrap_servers, timeout_s=30)
            if name in ("broker", "relay") or not self.settings.embedded_broker:
                ensure_topics(
                    self.settings.bootstrap_servers,
                    self.settings.kafka_partitions,
                    self.settings.kafka_replication_factor,
                )
            self.say(f"started {name} (pid {child.process.pid if child.process else '?'})")

    def wait_http_ready(self, timeout_s: float = 60.0) -> bool:
        """Wait until our own front door answers /healthz (when the stack has one): its
        process must be running and listening on the port, so that another server there
        is not taken for it. False when it has not answered (or has exited: it is then
        restarted by watch); PortInUseError when it exited and another process holds the
        port (it took the port after check_ports)."""
        api = next((c for c in self.children if c.name == "api"), None)
        if api is None:
            return False
        host, port = self.settings.http_host, self.settings.http_port
        url = f"http://{host}:{port}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if api.exited() is not None or api.process is None:
                if port_in_use(host, port):
                    raise PortInUseError(_in_use_message(host, port, "OKR_HTTP_PORT"))
                return False
            try:
                answered = httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                answered = False
            if answered and listens_on(api.process.pid, port):
                return True
            time.sleep(0.2)
        return False

    def watch(self) -> int:
        """Supervise until stopped; restart crashed children loudly. Returns the exit code."""
        while not self.stopping:
            time.sleep(0.3)
            for child in self.children:
                code = child.exited()
                if code is None or self.stopping:
                    continue
                now = time.monotonic()
                child.restarts.append(now)
                while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
                    child.restarts.popleft()
                if len(child.restarts) > MAX_RESTARTS:
                    self.say(
                        f"ERROR {child.name} exited with code {code} {MAX_RESTARTS} times "
                        f"within {RESTART_WINDOW_S:.0f} s (log: {child.log_path}); stopping"
                    )
                    return 1
                self.say(
                    f"WARNING {child.name} exited with code {code} (log: {child.log_path}); "
                    f"restarting ({len(child.restarts)}/{MAX_RESTARTS})"
                )
                child.stop()
                child.start()
                if child.name == "broker":
                    wait_for_broker(self.settings.bootstrap_servers, timeout_s=30)
                    ensure_topics(self.settings.bootstrap_servers, self.settings.kafka_partitions)
                pid = child.process.pid if child.process else "?"
                self.say(f"restarted {child.name} (pid {pid})")
        return 0

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            if child.stop():
                self.say(f"WARNING {child.name} did not stop within {STOP_TIMEOUT_S:.0f} s; killed")
            self.say(f"stopped {child.name}")


def dev_token(settings: Settings) -> str | None:
    """A fresh read/write/ingest token for the `dev` organisation, when auth exists."""
    if not _exists("services.auth.tokens"):
        return None
    from services.auth.tokens import TokenStore

    store = TokenStore.from_settings(settings)
    try:
        return store.create("dev", ("read", "write", "ingest"))
    finally:
        store.close()


def main() -> int:
    """Run the embedded stack in the foreground until SIGINT/SIGTERM."""
    settings = load_settings()

    def say(message: str, *, error: bool = False) -> None:
        print(f"[okrstream] {message}", flush=True, file=sys.stderr if error else sys.stdout)

    supervisor = Supervisor(settings, say)

    def _stop(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = 1
    try:
        supervisor.start()
        say(f"Kafka: {settings.bootstrap_servers}")
        say(f"data and logs: {settings.data_dir.resolve()}")
        if supervisor.wait_http_ready():
            say(f"okrstream is up: http://{settings.http_host}:{settings.http_port}/")
        elif any(c.name == "api" for c in supervisor.children) and not supervisor.stopping:
            say(
                "WARNING the API has not answered /healthz yet (a database it waits for?); "
                f"see {(settings.logs_dir / 'api.log').resolve()}"
            )
        token = dev_token(settings)
        if token:
            say(f"dev token (org 'dev', scopes read,write,ingest): {token}")
        say("ready; Ctrl-C stops everything")
        code = supervisor.watch()
    except Exception as exc:  # start-up failures: say what, then stop what started
        say(f"ERROR {exc}", error=True)
    finally:
        supervisor.stop()
    return code if not supervisor.stopping or code else 0

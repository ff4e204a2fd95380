"""Write-side benchmark (not a test): readings accepted per second over HTTP, relay rate.

`run(sizes)` starts the ingest service alone (uvicorn, SQLite store in a temp dir), posts
batches of `batch` readings from `clients` concurrent client processes, then relays the
whole store into a fresh embedded broker. Run: `.venv/bin/python -m tests.bench.bench_write`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.bench.profiling import start_profile, stop_profile


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its children."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


DEFAULT_SIZES = {"readings": 200_000, "batch": 1_000, "clients": 4, "kpis": 50, "workers": 2}


def _client(url: str, token: str, bodies: list[bytes], out: Any) -> None:
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    accepted = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for body in bodies:
            answer = client.post("/v1/readings", content=body)
            answer.raise_for_status()
            accepted += answer.json()["accepted"]
    out.put(accepted)


def _bodies(kpis: list[str], count: int, batch: int, offset: int) -> list[bytes]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = []
    for start in range(offset, offset + count, batch):
        readings = [
            {
                "kpi_id": kpis[i % len(kpis)],
                "value": float(i % 997),
                "observed_at": (t0 + timedelta(seconds=i)).isoformat(),
                "reading_id": f"bench-{i}",
            }
            for i in range(start, min(start + batch, offset + count))
        ]
        bodies.append(orjson.dumps({"readings": readings}))
    return bodies


def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/docs", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


def bench_ingest(data_dir: Path, sizes: dict[str, int]) -> dict[str, float]:
    from services.auth.tokens import TokenStore
    from services.command.decisions import Context
    from services.command.service import CommandService
    from services.eventstore import EventStore
    from services.settings import Settings
    from tests.support.ports import free_port

    settings = Settings(data_dir=data_dir)
    store = EventStore.from_settings(settings)
    service = CommandService(store)
    kpis = []
    for n in range(sizes["kpis"]):
        now = datetime.now(UTC)
        kpi_id = uuid.uuid4()
        service.define_kpi(
            Context(org_id="bench", occurred_at=now, recorded_at=now),
            kpi_id,
            {"name": f"K{n}", "direction": "increase", "target": 1.0, "interval": "day",
             "aggregation": "sum"},
        )  # fmt: skip
        kpis.append(str(kpi_id))
    store.close()
    tokens = TokenStore.from_settings(settings)
    token = tokens.create("bench", ["ingest"])
    tokens.close()
    port = free_port()
    env = {**os.environ, "OKR_DATA_DIR": str(data_dir), "OKR_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.ingest.app:create_app",
         "--port", str(port), "--log-level", "warning", "--no-access-log",
         "--workers", str(sizes["workers"])],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url)
        clients, total = sizes["clients"], sizes["readings"]
        share = total // clients
        work = [_bodies(kpis, share, sizes["batch"], c * share) for c in range(clients)]
        out: Any = mp.Queue()
        procs = [mp.Process(target=_client, args=(url, token, w, out)) for w in work]
        spy = start_profile(server.pid, "ingest")
        cpu0 = _cpu_s(server.pid)
        started = time.perf_counter()
        for p in procs:
            p.start()
        accepted = sum(out.get(timeout=600) for _ in procs)
        elapsed = time.perf_counter() - started
        server_cpu = _cpu_s(server.pid) - cpu0
        stop_profile(spy)
        for p in procs:
            p.join()
    finally:
        server.terminate()
        server.wait(10)
    return {
        "readings_accepted": accepted,
        "ingest_s": elapsed,
        "readings_per_s": accepted / elapsed,
        "ingest_cpu_ms_per_1000": 1000 * server_cpu / (accepted / 1000),
    }


def bench_relay(data_dir: Path, producer_factory: Any = None) -> dict[str, float]:
    from services.broker.embedded import EmbeddedBroker
    from services.eventstore import EventStore
    from services.relay.main import Relay
    from services.relay.progress import ProgressStore
    from services.settings import Settings
    from tests.support.ports import free_port

    with EmbeddedBroker(free_port(), partitions=4) as broker:
        settings = Settings(data_dir=data_dir, kafka_bootstrap=broker.bootstrap)
        store = EventStore.from_settings(settings)
        end = store.max_position()
        extra = {"producer_factory": producer_factory} if producer_factory else {}
        relay = Relay(settings, store, ProgressStore.from_settings(settings), **extra)
        relay.connect()
        thread = threading.Thread(target=relay.run, daemon=True)
        spy = start_profile(os.getpid(), "relay")
        cpu0 = time.process_time()
        started = time.perf_counter()
        thread.start()
        while relay.progress.position < end:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        relay_cpu = time.process_time() - cpu0
        stop_profile(spy)
        relay.stopping.set()
        thread.join(30)
        store.close()
    return {
        "relayed_events": end,
        "relay_s": elapsed,
        "relay_events_per_s": end / elapsed,
        "relay_cpu_ms_per_1000": 1000 * relay_cpu / (end / 1000),
    }


def run(sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Measure and print readings/s accepted over HTTP and relay events/s."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        figures = {**bench_ingest(data_dir, sizes), **bench_relay(data_dir)}
    print(
        f"ingest: {figures['readings_accepted']:.0f} readings in {figures['ingest_s']:.2f} s = "
        f"{figures['readings_per_s']:,.0f} readings/s over HTTP "
        f"({sizes['clients']} clients, batches of {sizes['batch']}, "
        f"{sizes['workers']} server processes, SQLite); server CPU "
        f"{figures['ingest_cpu_ms_per_1000']:.1f} ms per 1,000 readings"
    )
    print(
        f"relay: {figures['relayed_events']:.0f} events in {figures['relay_s']:.2f} s = "
        f"{figures['relay_events_per_s']:,.0f} events/s; relay process CPU "
        f"{figures['relay_cpu_ms_per_1000']:.1f} ms per 1,000 events"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes skew these)")
    return figures


if __name__ == "__main__":
    run()

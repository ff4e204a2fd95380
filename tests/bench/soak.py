"""Load held: readings at a steady rate with dashboards reading, for a bounded time.

Starts `okrstream up` on free ports, seeds KPIs and objectives through the public API, then
runs writer and reader processes side by side and samples the stack's memory. Stops by
itself after OKR_SOAK_SECONDS (default 300).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.bench.loadgen import LoadResult, percentile, read_views, write_readings
from tests.support.stack import Stack


def seed(url: str, token: str, kpis: int = 20) -> tuple[list[str], list[str]]:
    """KPIs, and objectives whose key results measure them; returns (kpi ids, read paths)."""
    headers = {"Authorization": f"Bearer {token}"}
    kpi_ids: list[str] = []
    paths: list[str] = []
    position = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(kpis):
            kpi = client.post(
                "/v1/kpis",
                json={
                    "name": f"Soak KPI {i}",
                    "direction": "increase",
                    "target": 50,
                    "interval": "day",
                    "aggregation": "avg",
                },
            )
            kpi.raise_for_status()
            kpi_ids.append(kpi.json()["id"])
            objective = client.post(
                "/v1/objectives",
                json={
                    "title": f"Soak objective {i}",
                    "owner": "soak",
                    "level": "team",
                    "period": {"start": "2026-01-01", "end": "2026-12-31"},
                },
            )
            objective.raise_for_status()
            oid = objective.json()["id"]
            linked = client.post(
                f"/v1/objectives/{oid}/key-results",
                json={
                    "title": "Average up",
                    "kind": "metric",
                    "start": 0,
                    "target": 60,
                    "kpi_id": kpi_ids[-1],
                },
            )
            linked.raise_for_status()
            position = max(position, int(linked.json()["position"]))
            paths += [f"/v1/objectives/{oid}", f"/v1/kpis/{kpi_ids[-1]}"]
        # Readers start once the projections hold what was seeded (read-your-writes).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = client.get("/v1/objectives", params={"min_position": position, "limit": 1})
            if seen.status_code == 200:
                break
    return kpi_ids, paths


def stack_rss_mb(stack: Stack) -> float:
    """RSS of okrstream's own processes (the embedded broker's in-memory log is apart: it
    holds every record it was sent, by design of its memory storage)."""
    return (
        sum(p.memory_info().rss for p in stack.descendants() if not p.name().startswith("tansu"))
        / 2**20
    )


def rss_by_process(stack: Stack) -> dict[str, float]:
    """RSS (MB) of each process of the stack, by command line tail."""
    found: dict[str, float] = {}
    for p in stack.descendants():
        name = " ".join(p.cmdline()[-2:])[-40:]
        found[name] = round(found.get(name, 0) + p.memory_info().rss / 2**20, 1)
    return found


def run(
    seconds: float | None = None, readings_per_s: float = 5_000, reads_per_s: float = 200
) -> dict[str, Any]:
    """Run the soak; returns its figures (errors, p99s, memory at start and end)."""
    seconds = seconds if seconds is not None else float(os.environ.get("OKR_SOAK_SECONDS", 300))
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp) / "data") as stack:
        token = stack.dev_token()
        kpi_ids, paths = seed(stack.url, token)
        time.sleep(2)
        rss_start = stack_rss_mb(stack)
        samples = [rss_start]
        writers = 2
        with ProcessPoolExecutor(max_workers=writers + 1) as pool:
            write_futures = [
                pool.submit(
                    write_readings,
                    stack.url,
                    token,
                    kpi_ids,
                    readings_per_s / writers,
                    250,
                    seconds,
                )
                for _ in range(writers)
            ]
            read_future = pool.submit(read_views, stack.url, token, paths, reads_per_s, seconds)
            while not read_future.done():
                time.sleep(min(10.0, max(1.0, seconds / 10)))
                samples.append(stack_rss_mb(stack))
            written: list[LoadResult] = [f.result() for f in write_futures]
            read = read_future.result()
        rss_end = stack_rss_mb(stack)
        rss_end_by_process = rss_by_process(stack)
    write_latencies = [x for w in written for x in w.latencies_ms]
    return {
        "soak_seconds": seconds,
        "soak_readings_per_s": sum(w.items for w in written) / seconds,
        "soak_errors": sum(w.errors for w in written) + read.errors,
        "soak_error_samples": [s for w in written for s in w.error_samples] + read.error_samples,
        "soak_write_p99_ms": round(percentile(write_latencies, 99), 2),
        "soak_read_rps": read.requests / seconds,
        "soak_read_p99_ms": round(percentile(read.latencies_ms, 99), 2),
        "soak_rss_start_mb": round(rss_start, 1),
        "soak_rss_end_mb": round(rss_end, 1),
        "soak_rss_peak_mb": round(max(samples), 1),
        "soak_rss_end_by_process": rss_end_by_process,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run()))

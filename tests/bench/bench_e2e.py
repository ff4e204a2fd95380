"""Full-stack benchmark (not a test): readings HTTP → store → relay → Kafka → processor → visible.

`run(sizes)` starts `okrstream up` on free ports and measures, through the public API only:
- ingest_e2e_readings_per_s: N readings posted by several client processes (batches of
  1,000) until a GET with `min_position` of the last write answers (the projections hold all);
- freshness_p99_ms: under a steady background load of `freshness_rate` readings/s, the time
  from a probe reading's 202 to a GET with its `min_position` answering 200.
Run: `.venv/bin/python -m tests.bench.bench_e2e`.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import orjson

from tests.bench.loadgen import percentile, write_readings
from tests.bench.soak import seed
from tests.support.stack import Stack

DEFAULT_SIZES = {
    "readings": 200_000,
    "batch": 1_000,
    "clients": 4,
    "kpis": 20,
    "freshness_rate": 10_000,
    "freshness_seconds": 20,
}


def _post_all(url: str, token: str, kpi_ids: list[str], count: int, batch: int, offset: int) -> int:
    """Post `count` readings; return the highest position answered."""
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    highest = 0
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for start in range(offset, offset + count, batch):
            body = orjson.dumps(
                {
                    "readings": [
                        {
                            "kpi_id": kpi_ids[i % len(kpi_ids)],
                            "value": float(i % 101),
                            "observed_at": (t0 + timedelta(seconds=i)).isoformat(),
                            "reading_id": f"e2e-{i}",
                        }
                        for i in range(start, min(start + batch, offset + count))
                    ]
                }
            )
            answer = client.post("/v1/readings", content=body)
            answer.raise_for_status()
            highest = max(highest, int(answer.json()["position"]))
    return highest


def wait_visible(url: str, token: str, path: str, position: int, timeout_s: float = 600) -> None:
    """Block until a read with min_position=`position` answers 200."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            if client.get(path, params={"min_position": position}).status_code == 200:
                return
    raise TimeoutError(f"position {position} not visible within {timeout_s} s")


def ingest_e2e(stack: Stack, token: str, kpi_ids: list[str], sizes: dict[str, int]) -> float:
    clients, total = sizes["clients"], sizes["readings"]
    share = total // clients
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=clients, mp_context=mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(_post_all, stack.url, token, kpi_ids, share, sizes["batch"], c * share)
            for c in range(clients)
        ]
        highest = max(f.result() for f in futures)
    wait_visible(stack.url, token, f"/v1/kpis/{kpi_ids[0]}", highest)
    return share * clients / (time.perf_counter() - started)


def freshness(stack: Stack, token: str, kpi_ids: list[str], sizes: dict[str, int]) -> list[float]:
    """Probe latencies (ms) from a reading's 202 to its visibility, under background load."""
    seconds = float(sizes["freshness_seconds"])
    rate = float(sizes["freshness_rate"])
    headers = {"Authorization": f"Bearer {token}"}
    probes: list[float] = []
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        load = [
            pool.submit(write_readings, stack.url, token, kpi_ids[1:], rate / 2, 500, seconds)
            for _ in range(2)
        ]
        time.sleep(1)
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + seconds - 2
            while time.monotonic() < deadline:
                reading = {
                    "kpi_id": kpi_ids[0],
                    "value": 1.0,
                    "observed_at": datetime.now(UTC).isoformat(),
                    "reading_id": uuid4().hex,
                }
                answer = client.post("/v1/readings", json={"readings": [reading]})
                accepted_at = time.perf_counter()
                position = answer.json()["position"]
                seen = client.get(f"/v1/kpis/{kpi_ids[0]}", params={"min_position": position})
                if seen.status_code == 200:
                    probes.append((time.perf_counter() - accepted_at) * 1000)
                else:
                    probes.append(10_000.0)
                time.sleep(0.1)
        for f in load:
            f.result()
    return probes


def run(sizes: dict[str, int] | None = None) -> dict[str, Any]:
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp) / "data") as stack:
        token = stack.dev_token()
        kpi_ids, _ = seed(stack.url, token, kpis=sizes["kpis"])
        rate = ingest_e2e(stack, token, kpi_ids, sizes)
        probes = freshness(stack, token, kpi_ids, sizes)
    return {
        "ingest_e2e_readings_per_s": round(rate, 1),
        "ingest_e2e_readings": sizes["readings"],
        "freshness_p50_ms": round(percentile(probes, 50), 1),
        "freshness_p99_ms": round(percentile(probes, 99), 1),
        "freshness_probes": len(probes),
        "freshness_load_readings_per_s": sizes["freshness_rate"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run()))

"""Load generators that run in their own processes: readings writers and dashboard readers.

Each worker paces itself to a target rate for a fixed duration and returns its latencies
and error count; nothing here asserts — benchmarks print figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

import httpx


@dataclass
class LoadResult:
    """What one load worker saw."""

    requests: int = 0
    errors: int = 0
    items: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def write_readings(
    url: str, token: str, kpi_ids: list[str], rate_per_s: float, batch: int, duration_s: float
) -> LoadResult:
    """POST /v1/readings batches of `batch` at `rate_per_s` readings/s for `duration_s`."""
    result = LoadResult()
    interval = batch / rate_per_s
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + duration_s
    next_at = time.monotonic()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            now = datetime.now(UTC).isoformat()
            body = {
                "readings": [
                    {
                        "kpi_id": kpi_ids[i % len(kpi_ids)],
                        "value": float(i % 97),
                        "observed_at": now,
                        "reading_id": uuid4().hex,
                    }
                    for i in range(batch)
                ]
            }
            started = time.perf_counter()
            try:
                answer = client.post("/v1/readings", json=body)
                ok = answer.status_code == 202 and not answer.json()["rejected"]
                if ok:
                    result.items += int(answer.json()["accepted"])
                else:
                    result.error_samples.append(answer.text[:200])
            except httpx.HTTPError as exc:
                ok = False
                result.error_samples.append(repr(exc)[:200])
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            result.errors += 0 if ok else 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    result.error_samples = result.error_samples[:5]
    return result


def read_views(
    url: str, token: str, paths: list[str], rate_per_s: float, duration_s: float
) -> LoadResult:
    """GET `paths` round-robin at `rate_per_s` requests/s for `duration_s`."""
    result = LoadResult()
    interval = 1.0 / rate_per_s
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + duration_s
    next_at = time.monotonic()
    i = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                answer = client.get(paths[i % len(paths)])
                ok = answer.status_code == 200
                if not ok:
                    result.error_samples.append(f"{answer.status_code} {answer.text[:160]}")
            except httpx.HTTPError as exc:
                ok = False
                result.error_samples.append(repr(exc)[:200])
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            result.errors += 0 if ok else 1
            i += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    result.error_samples = result.error_samples[:5]
    return result

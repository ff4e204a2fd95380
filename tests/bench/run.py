"""`make bench`: every benchmark side by side in one run; a table, then one JSON line.

Each benchmark starts what it needs (embedded broker, stores, services) on free ports.
Sizes come from the environment for a quick run:
  OKR_BENCH_QUICK=1             small sizes everywhere (a minute or two)
  OKR_BENCH_READINGS=N          readings for the write, processor and end-to-end benches
  OKR_BENCH_OBJECTIVES=N        objectives for the processor bench (RSS figure)
  OKR_SOAK_SECONDS=N            soak duration (default 300; 0 skips the soak)
The last stdout line is one JSON object with every key (null where a bench failed, with
the reason under "errors").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

GOALS = {
    "ingest_http_readings_per_s": (">=", 50_000),
    "relay_events_per_s": (">=", 50_000),
    "processor_e2e_readings_per_s": (">=", 50_000),
    "ingest_e2e_readings_per_s": (">=", 50_000),
    "e2e_vs_raw": (">=", 0.5),
    "e2e_vs_naive": (">=", 10),
    "replay_vs_raw": (">=", 0.5),
    "api_p99_ms": ("<=", 10),
    "api_rps": (">=", 500),
    "as_of_p99_ms": ("<=", 50),
    "freshness_p99_ms": ("<=", 1000),
    "processor_rss_mb": ("<=", 500),
    "processor_peak_rss_mb": ("<=", 500),
    "soak_errors": ("<=", 0),
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def sizes() -> dict[str, dict[str, int]]:
    quick = os.environ.get("OKR_BENCH_QUICK") == "1"
    readings = _env_int("OKR_BENCH_READINGS", 20_000 if quick else 200_000)
    return {
        "write": {"readings": readings, "clients": 4, "batch": 1_000},
        "processor": {
            "readings": readings,
            "objectives": _env_int("OKR_BENCH_OBJECTIVES", 1_000 if quick else 10_000),
            "kpis": 200,
            "naive": 5_000 if quick else 20_000,
        },
        "query": {"duration_s": 3 if quick else 8, "as_of_requests": 100 if quick else 300},
        "e2e": {
            "readings": readings,
            "freshness_seconds": 8 if quick else 20,
            "freshness_rate": 2_000 if quick else 10_000,
        },
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run(name: str, fn: Callable[[], dict[str, Any]], errors: dict[str, str]) -> dict[str, Any]:
    print(f"--- {name} ---", flush=True)
    started = time.monotonic()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            result = fn()
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        result = {}
    for line in captured.getvalue().splitlines():
        print(f"    {line}")
    print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> None:
    from tests.bench import bench_e2e, bench_processor, bench_query, bench_write, soak

    s = sizes()
    errors: dict[str, str] = {}
    write = _run("write side (HTTP ingest, relay)", lambda: bench_write.run(s["write"]), errors)
    proc = _run("processor (raw Kafka, naive faust, e2e, replay)",
                lambda: bench_processor.run(s["processor"]), errors)  # fmt: skip
    query = _run("query API (GET objective, as_of)", lambda: bench_query.run(s["query"]), errors)
    e2e = _run("full stack (HTTP → visible, freshness)", lambda: bench_e2e.run(s["e2e"]), errors)
    soak_seconds = float(os.environ.get("OKR_SOAK_SECONDS", 300))
    held = (
        _run(f"soak ({soak_seconds:.0f} s)", lambda: soak.run(soak_seconds), errors)
        if soak_seconds > 0
        else {}
    )

    paced = query.get("get_objective_paced", {})
    as_of = query.get("as_of_10k_readings", {})
    raw_records = proc.get("raw_readings_per_s") and proc.get("raw_produce_records_per_s")
    figures: dict[str, Any] = {
        "raw_kafka_msgs_per_s": (
            round(
                1 / (1 / proc["raw_produce_records_per_s"] + 1 / proc["raw_consume_records_per_s"]),
                1,
            )
            if raw_records
            else None
        ),
        "raw_kafka_readings_per_s": proc.get("raw_readings_per_s"),
        "ingest_http_readings_per_s": write.get("readings_per_s"),
        "relay_events_per_s": write.get("relay_events_per_s"),
        "processor_e2e_readings_per_s": proc.get("e2e_readings_per_s"),
        "ingest_e2e_readings_per_s": e2e.get("ingest_e2e_readings_per_s"),
        "naive_faust_events_per_s": proc.get("naive_readings_per_s"),
        "replay_events_per_s": proc.get("replay_events_per_s"),
        "api_p50_ms": paced.get("p50_ms"),
        "api_p99_ms": paced.get("p99_ms"),
        "api_rps": paced.get("rps"),
        "api_max_rps": query.get("get_objective_max", {}).get("rps"),
        "as_of_p99_ms": as_of.get("p99_ms"),
        "freshness_p99_ms": e2e.get("freshness_p99_ms"),
        "processor_rss_mb": proc.get("processor_rss_mb"),
        "processor_peak_rss_mb": proc.get("processor_peak_rss_mb"),
        **{k: v for k, v in held.items() if k != "soak_error_samples"},
    }
    # e2e ratios compare the store → processor path with the same records through raw Kafka.
    figures["e2e_vs_raw"] = _ratio(
        figures["processor_e2e_readings_per_s"], figures["raw_kafka_readings_per_s"]
    )
    figures["full_e2e_vs_raw"] = _ratio(
        figures["ingest_e2e_readings_per_s"], figures["raw_kafka_readings_per_s"]
    )
    figures["e2e_vs_naive"] = _ratio(
        figures["processor_e2e_readings_per_s"], figures["naive_faust_events_per_s"]
    )
    figures["replay_vs_raw"] = _ratio(
        figures["replay_events_per_s"], proc.get("raw_consume_readings_per_s")
    )
    figures["processor_rss_scale"] = (
        f"{s['processor']['objectives']} objectives, {s['processor']['readings']} readings"
    )
    figures["cores"] = os.cpu_count()
    figures["commit"] = _commit()
    figures["errors"] = errors

    print("\n{:<32} {:>16}   {}".format("figure", "measured", "goal"))
    for key, value in figures.items():
        if key in ("errors",):
            continue
        goal = GOALS.get(key)
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        verdict = ""
        if goal and isinstance(value, int | float):
            op, target = goal
            met = value >= target if op == ">=" else value <= target
            verdict = f"{op} {target:,}  {'met' if met else 'MISSED'}"
        print(f"{key:<32} {shown:>16}   {verdict}")
    for name, error in errors.items():
        print(f"ERROR in {name}: {error}")
    print(json.dumps(figures, default=str), flush=True)


if __name__ == "__main__":
    main()

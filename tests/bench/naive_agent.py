"""A naive per-event faust agent with a Table (`table[k] += v`): the benchmark's baseline.

Usage: python -m tests.bench.naive_agent BOOTSTRAP TOPIC GROUP EXPECTED
Each record is one reading.recorded event (canonical JSON); the agent adds its value to
`table[kpi_id]`, one event at a time. Writes "done <seconds from first to last event>
<events>" straight to file descriptor 1 when EXPECTED events are counted (faust redirects
sys.stdout into its logger, so a print() would come out as a log line).

The input topic and the table's changelog topic (`changelog_topic(GROUP)`) are created by
the caller: Tansu needs topics created up front, and short group timeouts.
"""

from __future__ import annotations

import os
import sys
import time

import faust
import orjson


def table_name(group: str) -> str:
    return f"{group}-totals"


def changelog_topic(group: str) -> str:
    """faust's changelog topic name of the table (`{app id}-{table name}-changelog`)."""
    return f"{group}-{table_name(group)}-changelog"


def main() -> None:
    bootstrap, topic_name, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    app = faust.App(
        group, broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
        processing_guarantee="at_least_once", topic_partitions=4, topic_allow_declare=False,
        topic_disable_leader=True, broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0, broker_max_poll_interval=30.0,
        consumer_auto_offset_reset="earliest",
    )  # fmt: skip
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    table = app.Table(table_name(group), default=float, partitions=4)
    state = {"n": 0, "first": 0.0}

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            if state["n"] == 0:
                state["first"] = time.perf_counter()
            reading = orjson.loads(event.value)
            table[reading["kpi_id"]] += reading["value"]
            state["n"] += 1
            if state["n"] >= expected:
                elapsed = time.perf_counter() - state["first"]
                os.write(1, f"done {elapsed:.3f} {state['n']}\n".encode())
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()

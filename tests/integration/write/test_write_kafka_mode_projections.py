"""Issue 7, "both paths give the same projections": the same readings posted over real HTTP
to ingest in store mode (event store -> relay -> Kafka -> processor) and in kafka mode
(ingest -> Kafka -> processor) build the same projections.

Two independent setups, each with its own data dir (or PostgreSQL schema), its own embedded
broker (the topic names are fixed, so the paths cannot share one), an in-process relay (goal
events reach Kafka through the relay on both paths), a real processor process and the ingest
app served by uvicorn on a free port. Both get the same goal events (identical event ids and,
appended first to a fresh store, identical positions) and then the same requests, including a
resend of one request with changed values under the same reading ids (the first value wins
on both paths: in the store by stream id, in the processor by (kpi, reading id)) and an
unknown KPI (rejected on both). The ingest clock is fixed so the reading events (whose
`recorded_at` is the ingest time) are byte-identical on both paths.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from services.auth.tokens import TokenStore
from services.broker.embedded import EmbeddedBroker
from services.eventstore import EventStore
from services.ingest.app import create_app
from services.projectionstore.db import Database
from services.projectionstore.meta import live_generation
from services.projectionstore.schema import Tables
from services.relay.main import Relay
from services.relay.progress import ProgressStore
from services.settings import Settings
from tests.conftest import make_settings
from tests.integration.processor.harness import (
    ProcessorProcess,
    live_hash,
    projection_db,
    readings_applied,
    store_events,
    wait_for_position,
)
from tests.support.ports import free_port
from tests.support.serving import serve
from tests.unit.processor.builders import Log

pytestmark = pytest.mark.integration

ORG = "acme-kafka-mode"
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)  # the ingest clock (recorded_at), both paths
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}
PARTITIONS = 4

OBJECTIVE = UUID(int=0x0B1)
KPI_SUM = UUID(int=0x51)  # tickets per day, summed
KPI_AVG = UUID(int=0xA1)  # latency, averaged
KR_SUM = UUID(int=0xC1)
KR_AVG = UUID(int=0xC2)
KR_MANUAL = UUID(int=0xC3)


def goal_log() -> Log:
    """Two KPIs, an objective with two KPI-linked KRs and a checked-in manual one."""
    log = Log(org=ORG)
    log.emit(
        "kpi.defined", KPI_SUM, name="Tickets", direction="increase", target=50.0, amber=40.0,
        interval="day", aggregation="sum",
    )  # fmt: skip
    log.emit(
        "kpi.defined", KPI_AVG, name="Latency", direction="decrease", target=200.0,
        amber=250.0, interval="day", aggregation="avg",
    )  # fmt: skip
    log.emit(
        "objective.drafted", OBJECTIVE, title="Support", owner="ana", level="team", period=PERIOD
    )
    log.emit(
        "key_result.added", OBJECTIVE, kr_id=KR_SUM, title="Tickets closed", kind="metric",
        start=0.0, target=5_000.0, weight=2.0, kpi_id=KPI_SUM, aggregation="sum",
    )  # fmt: skip
    log.emit(
        "key_result.added", OBJECTIVE, kr_id=KR_AVG, title="Latency", kind="metric",
        start=400.0, target=150.0, kpi_id=KPI_AVG, aggregation="avg",
    )  # fmt: skip
    log.emit(
        "key_result.added", OBJECTIVE, kr_id=KR_MANUAL, title="Docs", kind="metric",
        start=0.0, target=10.0,
    )  # fmt: skip
    log.emit("key_result.checked_in", OBJECTIVE, kr_id=KR_MANUAL, value=4.0)
    return log


def reading(i: int, value: float | None = None) -> dict[str, Any]:
    kpi = KPI_SUM if i % 3 else KPI_AVG
    return {
        "kpi_id": str(kpi),
        "value": value
        if value is not None
        else float((i * 7) % 23) + (0.25 if kpi == KPI_AVG else 0),
        "observed_at": (T0 + timedelta(hours=5 * i + i % 4)).isoformat(),
        "reading_id": f"r-{i}",
        **({"source": "crm"} if i % 5 == 0 else {}),
    }


REQUESTS: list[list[dict[str, Any]]] = [
    [reading(i) for i in range(0, 150)],
    [reading(i) for i in range(150, 300)]
    + [{**reading(7), "kpi_id": str(UUID(int=0xDEAD))}],  # unknown KPI: rejected
    [reading(i) for i in range(300, 420)] + [reading(301)],  # an in-batch repeat
    # A resend of some readings with other values: the first value stands on both paths.
    [reading(i, value=999.0) for i in range(100, 200)],
]
DISTINCT = 420


@dataclass
class Setup:
    settings: Settings
    broker: EmbeddedBroker
    url: str
    token: str
    processor: ProcessorProcess
    db: Database


@contextmanager
def relay(settings: Settings) -> Iterator[None]:
    store = EventStore.from_settings(settings)
    progress = ProgressStore.from_settings(settings)
    running = Relay(settings, store, progress)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        running.stopping.set()
        thread.join(15)
        progress.close()
        store.close()


@contextmanager
def setup(base: Settings, mode: str, group: str, logs: Path) -> Iterator[Setup]:
    """Broker, goal events, relay, processor and ingest over HTTP for one ingest mode."""
    with ExitStack() as stack:
        broker = stack.enter_context(
            EmbeddedBroker(free_port(), partitions=PARTITIONS, log_path=logs / f"{mode}-tansu.log")
        )
        settings = base.model_copy(
            update={"kafka_bootstrap": broker.bootstrap, "ingest_mode": mode}
        )
        tokens = TokenStore.from_settings(settings)
        token = tokens.create(ORG, ["ingest"])
        tokens.close()
        stack.enter_context(relay(settings))
        processor = ProcessorProcess(settings, broker.bootstrap, group, logs / f"{mode}-p.log")
        stack.callback(processor.stop)
        processor.start()
        db = projection_db(settings)
        stack.callback(db.close)
        app = create_app(settings)
        app.state.readings.clock = lambda: NOW  # identical recorded_at on both paths
        url = stack.enter_context(serve(app))
        yield Setup(settings, broker, url, token, processor, db)


def post_all(s: Setup) -> list[dict[str, Any]]:
    answers = []
    with httpx.Client(base_url=s.url, timeout=30) as client:
        for items in REQUESTS:
            r = client.post(
                "/v1/readings",
                json={"readings": items},
                headers={"Authorization": f"Bearer {s.token}"},
            )
            assert r.status_code == 202, r.text
            answers.append(r.json())
    return answers


def snapshot(db: Database) -> dict[str, Any]:
    """The meaningful content, explicitly, plus the processor's content hash per table.

    content_hash leaves out the volatile columns (services/processor/digest.py). The goal
    events, which both paths relay, have identical positions here, so every other column of
    every other table is compared as is."""
    with db.transaction(write=False) as cur:
        t = Tables(live_generation(cur))
        days = cur.execute(
            f"SELECT kpi_id, day, count, total, exact_total, minimum, maximum, last_at,"
            f" last_value, last_key FROM {t.kpi_days} ORDER BY kpi_id, day"
        ).fetchall()
        readings = cur.execute(
            f"SELECT kpi_id, reading_id, value, observed_at, recorded_at, reading_key"
            f" FROM {t.readings} ORDER BY kpi_id, reading_id"
        ).fetchall()
        kpis = cur.execute(
            f"SELECT kpi_id, last_reading_at, state, version FROM {t.kpis} ORDER BY kpi_id"
        ).fetchall()
        krs = cur.execute(
            f"SELECT kr_id, current, progress, score, updated_at FROM {t.key_results}"
            " ORDER BY kr_id"
        ).fetchall()
        objective = cur.execute(
            f"SELECT score, progress, rollup_score, zone FROM {t.objectives}"
            " WHERE objective_id = ?",
            (str(OBJECTIVE),),
        ).fetchall()
    return {
        "kpi_days": [tuple(r) for r in days],
        "readings": [tuple(r) for r in readings],
        "kpis": [tuple(r) for r in kpis],
        "key_results": [tuple(r) for r in krs],
        "objective": [tuple(r) for r in objective],
        "hash": live_hash(db),
    }


def test_store_and_kafka_mode_build_the_same_projections(
    backend: str, request: pytest.FixtureRequest, unique_group: str, tmp_path: Path
) -> None:
    pg = request.getfixturevalue("pg_database") if backend == "postgres" else None
    goal_events = [e for _, e in goal_log().entries]
    with ExitStack() as stack:
        setups: dict[str, Setup] = {}
        goal_positions: set[int] = set()
        for mode in ("store", "kafka"):
            base = make_settings(backend, tmp_path / f"{mode}-data", pg)
            stored = store_events(base, goal_events)
            goal_positions.add(stored[-1][0])
            s = stack.enter_context(setup(base, mode, f"{unique_group}-{mode}", tmp_path))
            setups[mode] = s
        (last_goal,) = goal_positions  # same events, same positions in both stores
        for s in setups.values():  # the goal events are applied before any reading
            wait_for_position(s.db, last_goal, PARTITIONS, procs=[s.processor])

        store, kafka = setups["store"], setups["kafka"]
        store_answers = post_all(store)
        kafka_answers = post_all(kafka)

        # The answers agree, except that only store mode knows a cross-request repeat (the
        # resend) and a position for the readings.
        for a, b in zip(store_answers, kafka_answers, strict=True):
            assert (a["accepted"] + a["duplicates"], a["rejected"]) == (
                b["accepted"] + b["duplicates"],
                b["rejected"],
            )
        assert [a["accepted"] for a in store_answers] == [150, 150, 120, 0]
        assert [b["accepted"] for b in kafka_answers] == [150, 150, 120, 100]
        assert kafka_answers[-1]["position"] == last_goal, "no store position in kafka mode"

        # Store mode: read-your-writes by position (readings, then the measure stage).
        wait_for_position(
            store.db, max(a["position"] for a in store_answers), PARTITIONS,
            procs=[store.processor],
        )  # fmt: skip
        expected = snapshot(store.db)
        assert len(expected["readings"]) == DISTINCT

        # Kafka mode has no position: wait until every reading is applied, then until the
        # objective's measurement (a second stage, fed by notices) has caught up.
        deadline = time.monotonic() + 30
        while readings_applied(kafka.db) < DISTINCT and time.monotonic() < deadline:
            assert kafka.processor.proc is not None
            assert kafka.processor.proc.poll() is None, (
                f"processor exited; see {kafka.processor.log}"
            )
            time.sleep(0.1)
        assert readings_applied(kafka.db) == DISTINCT
        got = snapshot(kafka.db)
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            got = snapshot(kafka.db)

        for name in ("kpi_days", "readings", "kpis", "key_results", "objective", "hash"):
            assert got[name] == expected[name], name
        # The resend did not change anything: the first values stand.
        values = {r[1]: r[2] for r in got["readings"]}
        assert values["r-150"] == reading(150)["value"]
        assert 999.0 not in values.values()
        krs = {r[0]: r for r in got["key_results"]}
        assert krs[str(KR_SUM)][1] == pytest.approx(
            sum(reading(i)["value"] for i in range(DISTINCT) if i % 3)
        )
        assert krs[str(KR_AVG)][1] is not None

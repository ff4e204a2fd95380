"""Goal events, readings and relay-format records for processor tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

import events
from services.processor.records import GoalItem, ReadingRow
from services.projectionstore.schema import iso

T0 = datetime(2026, 1, 10, tzinfo=UTC)
NS = UUID(int=42)


@dataclass
class Log:
    """An event-store-like log: stream versions, global positions, events in order."""

    org: str = "acme"
    versions: dict[UUID, int] = field(default_factory=dict)
    entries: list[tuple[int, events.Event]] = field(default_factory=list)

    def emit(
        self, type_name: str, stream_id: UUID, at: datetime = T0, **payload: Any
    ) -> events.Event:
        version = self.versions.get(stream_id, 0) + 1
        self.versions[stream_id] = version
        cls = events.EVENT_TYPES[type_name]
        event = cls.model_validate(
            {
                "event_id": uuid5(NS, f"{stream_id}:{version}"),
                "org_id": self.org,
                "stream_id": stream_id,
                "stream_version": version,
                "occurred_at": at,
                "recorded_at": at,
                **payload,
            }
        )
        self.entries.append((len(self.entries) + 1, event))
        return event

    def kpi(
        self, kpi_id: UUID, *, target: float, amber: float, interval: str, aggregation: str,
        name: str = "K",
    ) -> events.Event:  # fmt: skip
        """kpi.defined of an increasing KPI."""
        return self.emit(
            "kpi.defined", kpi_id, name=name, direction="increase", target=target, amber=amber,
            interval=interval, aggregation=aggregation,
        )  # fmt: skip

    def reading(self, kpi_id: UUID, value: float, observed_at: datetime, rid: str) -> events.Event:
        stream = uuid5(NS, f"reading:{kpi_id}:{rid}")
        return self.emit(
            "reading.recorded",
            stream,
            at=observed_at,
            kpi_id=kpi_id,
            value=value,
            observed_at=observed_at,
            reading_id=rid,
        )

    def goal_items(self) -> list[GoalItem]:
        return [
            GoalItem(e, p, events.encode(e).decode())
            for p, e in self.entries
            if e.type != "reading.recorded"
        ]

    def reading_rows(self) -> list[ReadingRow]:
        return [to_row(e, p) for p, e in self.entries if isinstance(e, events.ReadingRecorded)]


def to_row(e: events.Event, position: int | None) -> ReadingRow:
    assert isinstance(e, events.ReadingRecorded)
    return ReadingRow(
        event_id=str(e.event_id),
        org_id=e.org_id,
        kpi_id=str(e.kpi_id),
        reading_id=e.reading_id,
        value=e.value,
        observed_at=iso(e.observed_at),
        recorded_at=iso(e.recorded_at),
        source=e.source,
        position=position,
    )


def worked_example(log: Log) -> dict[str, UUID]:
    """API.md's worked example: score 0.65 (KR A 0.4, KR B 1, KR C weight 2 at 0.6)."""
    objective, kpi = uuid4(), uuid4()
    kr_a, kr_b, kr_c = uuid4(), uuid4(), uuid4()
    period = {"start": "2026-01-01", "end": "2026-03-31"}
    log.kpi(kpi, name="Tickets", target=10.0, amber=9.0, interval="day", aggregation="avg")
    log.emit(
        "objective.drafted", objective, title="Delight", owner="ana", level="company", period=period
    )
    log.emit(
        "key_result.added",
        objective,
        kr_id=kr_a,
        title="A",
        kind="metric",
        start=100.0,
        target=50.0,
    )
    log.emit("key_result.added", objective, kr_id=kr_b, title="B", kind="milestone")
    log.emit(
        "key_result.added",
        objective,
        kr_id=kr_c,
        title="C",
        kind="metric",
        start=0.0,
        target=10.0,
        weight=2.0,
        kpi_id=kpi,
    )
    log.emit("key_result.checked_in", objective, kr_id=kr_a, value=80.0)
    log.emit("key_result.checked_in", objective, kr_id=kr_b, done=True)
    log.reading(kpi, 4.0, datetime(2026, 1, 20, tzinfo=UTC), "r1")
    log.reading(kpi, 8.0, datetime(2026, 2, 3, tzinfo=UTC), "r2")
    return {"objective": objective, "kpi": kpi, "kr_a": kr_a, "kr_b": kr_b, "kr_c": kr_c}


def synthetic(
    log: Log, objectives: int, kpis: int, readings: int, seed: int = 7
) -> tuple[list[UUID], list[UUID]]:
    """A reproducible organisation: KPIs, objectives (every tenth a child of the first) with a
    KPI-linked, a checked-in and a milestone key result, then `readings` readings."""
    import random

    rnd = random.Random(seed)
    period = {"start": "2026-01-01", "end": "2026-12-31"}
    kpi_ids = [UUID(int=rnd.getrandbits(128)) for _ in range(kpis)]
    for k in kpi_ids:
        log.kpi(
            k, target=100.0, amber=90.0, interval=rnd.choice(["day", "week", "month"]),
            aggregation=rnd.choice(["avg", "sum", "last", "max"]),
        )  # fmt: skip
    obj_ids = [UUID(int=rnd.getrandbits(128)) for _ in range(objectives)]
    for i, o in enumerate(obj_ids):
        parent = obj_ids[0] if i and i % 10 == 0 else None
        log.emit(
            "objective.drafted", o, title=f"O{i}", owner=f"owner{i % 7}", level="team",
            period=period, parent_id=parent,
        )  # fmt: skip
        a, b, c = (UUID(int=rnd.getrandbits(128)) for _ in range(3))
        log.emit(
            "key_result.added", o, kr_id=a, title="A", kind="metric", start=0.0, target=100.0,
            kpi_id=rnd.choice(kpi_ids),
        )  # fmt: skip
        log.emit("key_result.added", o, kr_id=b, title="B", kind="metric", start=10.0, target=5.0)
        log.emit("key_result.added", o, kr_id=c, title="C", kind="milestone", weight=2.0)
        log.emit("key_result.checked_in", o, kr_id=b, value=rnd.uniform(4, 11))
        if rnd.random() < 0.3:
            log.emit("key_result.checked_in", o, kr_id=c, done=True)
        if rnd.random() < 0.2:
            log.emit("objective.closed", o, at=datetime(2026, 6, 1, tzinfo=UTC))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for r in range(readings):
        at = start + timedelta(minutes=rnd.randrange(0, 400 * 24 * 60))
        log.reading(rnd.choice(kpi_ids), round(rnd.uniform(0, 120), 3), at, f"s{r}")
    return obj_ids, kpi_ids

"""A reading produced straight to Kafka for a KPI the projections do not know yet is held
until its definition arrives (then applied, validated as of its arrival) or the grace ends
(then dead-lettered with the reason). Against a real SQLite file and a real PostgreSQL
schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import orjson
import pytest

from services.processor import held
from services.processor.held import HeldReading
from services.processor.projector import Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from services.projectionstore.schema import HELD_TABLE
from services.settings import Settings
from tests.unit.processor.builders import Log, worked_example

GRACE = timedelta(seconds=300)
ARRIVED = datetime(2026, 2, 15, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(ARRIVED)


@pytest.fixture
def p(settings: Settings, clock: Clock) -> Projector:
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    return Projector(db, clock=clock)


def direct(
    kpi: UUID, *, org: str = "acme", observed_at: datetime = ARRIVED, offset: int = 7
) -> HeldReading:
    body = {"kpi_id": str(kpi), "org_id": org, "value": 8.0, "observed_at": observed_at}
    return HeldReading(
        str(kpi), "okr.kpi-readings.v1", 2, offset, str(kpi).encode(),
        orjson.dumps(body).decode(), f"unknown KPI {kpi} for organisation {org!r}",
    )  # fmt: skip


def rows(p: Projector, sql: str) -> list[tuple[object, ...]]:
    with p.db.transaction(write=False) as cur:
        return [tuple(r) for r in cur.execute(sql).fetchall()]


def define(p: Projector, log: Log) -> None:
    p.apply_goal_batch([i for i in log.goal_items() if i.event.type != "reading.recorded"], [])


def test_a_held_reading_is_applied_once_its_kpi_is_defined(p: Projector, clock: Clock) -> None:
    log = Log()
    ids = worked_example(log)
    assert held.hold(p, [direct(ids["kpi"])]) == []
    clock.now = ARRIVED + timedelta(seconds=30)
    nothing = held.release(p, GRACE)
    assert (nothing.applied, nothing.dead) == (0, []), "the KPI is unknown: it waits"
    assert len(rows(p, f"SELECT id FROM {HELD_TABLE}")) == 1

    define(p, log)
    released = held.release(p, GRACE)
    assert (released.applied, released.dead) == (1, [])
    assert rows(p, f"SELECT id FROM {HELD_TABLE}") == []
    stored = rows(p, "SELECT kpi_id, value, observed_at, recorded_at FROM g1_readings")
    # Recorded as of its arrival: when the platform received it, not when it was released.
    assert stored == [(str(ids["kpi"]), 8.0, "2026-02-15T12:00:00.000000Z",
                       "2026-02-15T12:00:00.000000Z")]  # fmt: skip
    # Its objective's re-evaluation is deferred for the next pass, in the same transaction.
    assert rows(p, "SELECT objective_id FROM g1_pending_notices") == [(str(ids["objective"]),)]
    again = held.release(p, GRACE)
    assert (again.applied, again.dead) == (0, [])
    assert len(rows(p, "SELECT kpi_id FROM g1_readings")) == 1


def test_a_kpi_still_unknown_after_the_grace_is_dead_lettered(p: Projector, clock: Clock) -> None:
    kpi = uuid4()
    held.hold(p, [direct(kpi, offset=41)])
    clock.now = ARRIVED + GRACE - timedelta(seconds=1)
    assert held.release(p, GRACE).dead == []
    clock.now = ARRIVED + GRACE + timedelta(seconds=1)
    released = held.release(p, GRACE)
    assert released.applied == 0
    [(held_id, letter)] = released.dead
    assert f"unknown KPI {kpi}" in letter.reason
    assert "did not arrive within 300 s" in letter.reason
    assert (letter.topic, letter.partition, letter.offset) == ("okr.kpi-readings.v1", 2, 41)
    assert letter.key == str(kpi).encode()
    assert orjson.loads(letter.value or b"")["kpi_id"] == str(kpi)
    # Claimed while its dead letter is sent: another worker's release leaves it alone
    # (it was sent by every worker), and finds it again only if the sender died.
    assert held.release(p, GRACE).dead == []
    clock.now += held.CLAIM + timedelta(seconds=1)
    assert [i for i, _ in held.release(p, GRACE).dead] == [held_id]
    held.forget(p, [held_id])
    assert rows(p, f"SELECT id FROM {HELD_TABLE}") == []


def test_a_held_reading_is_judged_as_of_its_arrival(p: Projector, clock: Clock) -> None:
    log = Log()
    ids = worked_example(log)
    kpi = ids["kpi"]
    held.hold(p, [
        direct(kpi, observed_at=ARRIVED + timedelta(minutes=4), offset=1),
        direct(kpi, observed_at=ARRIVED + timedelta(minutes=6), offset=2),
        direct(kpi, org="globex", offset=3),
    ])  # fmt: skip
    define(p, log)
    clock.now = ARRIVED + timedelta(hours=1)  # both observed_at are in the past by now
    released = held.release(p, GRACE)
    assert released.applied == 1, "4 minutes ahead of its arrival is within the 5 allowed"
    reasons = {letter.offset: letter.reason for _, letter in released.dead}
    assert "5 minutes in the future" in reasons[2]
    assert "unknown KPI" in reasons[3]
    assert "globex" in reasons[3]
    assert "did not arrive" not in reasons[3], "the KPI is known: another organisation's"
    stored = rows(p, "SELECT observed_at FROM g1_readings")
    assert stored == [("2026-02-15T12:04:00.000000Z",)]


def test_the_held_readings_are_bounded(p: Projector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held, "HOLD_LIMIT", 3)
    kpi = uuid4()
    assert held.hold(p, [direct(kpi, offset=i) for i in range(2)]) == []
    overflow = held.hold(p, [direct(kpi, offset=i) for i in range(2, 5)])
    assert [d.offset for d in overflow] == [3, 4]
    assert all("held already" in d.reason for d in overflow)
    assert [r[0] for r in rows(p, f"SELECT kafka_offset FROM {HELD_TABLE} ORDER BY id")] == [
        0, 1, 2,
    ]  # fmt: skip


def test_a_held_table_written_before_claims_gets_the_column(settings: Settings) -> None:
    """A store whose held_readings table predates `claimed_until`: every release failed
    on the missing column, so nothing held was applied or dead-lettered again."""
    db = Database.from_settings(settings, settings.projections_db_path)
    with db.transaction() as cur:
        serial = "BIGSERIAL" if cur.dialect == "postgres" else "INTEGER"
        cur.execute(
            f"CREATE TABLE {HELD_TABLE} (id {serial} PRIMARY KEY, kpi_id TEXT NOT NULL,"
            " topic TEXT NOT NULL, part INTEGER NOT NULL, kafka_offset BIGINT NOT NULL,"
            " msg_key TEXT, value TEXT NOT NULL, received_at TEXT NOT NULL)"
        )
    ensure_schema(db)
    clock = Clock(ARRIVED)
    p = Projector(db, clock=clock)
    held.hold(p, [direct(uuid4())])
    clock.now += GRACE + timedelta(seconds=1)
    assert len(held.release(p, GRACE).dead) == 1

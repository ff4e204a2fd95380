"""A query app over a real projection store (SQLite or PostgreSQL), populated directly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.auth.tokens import TokenStore
from services.projectionstore.db import Database
from services.projectionstore.schema import Tables
from services.query.app import create_app
from services.settings import Settings
from tests.integration.query.query_seed import KR, Seeder, create_tables, set_position
from tests.support.serving import serve


@dataclass
class World:
    client: TestClient
    db: Database
    tables: Tables
    seeder: Seeder
    settings: Settings
    token: str  # org "acme", read
    other: str  # org "globex", read
    writer_only: str  # org "acme", write (no read)
    company: str
    department: str
    team: str
    archived: str
    foreign: str
    kpi: str
    foreign_kpi: str
    detections: list[str]
    position: int
    now: datetime  # when the world was seeded (the services read the real clock)

    def get(self, path: str, token: str | None = None, **params: object):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.client.get(path, params=params, headers=headers)


def _quarter(now: datetime) -> tuple[date, date]:
    """A 90-day period around `now`, about half elapsed."""
    start = (now - timedelta(days=45)).date()
    return start, start + timedelta(days=89)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    db = Database.from_settings(settings, settings.projections_db_path)
    # Taken when the world is seeded, not at import: a suite that crosses midnight UTC
    # between collection and this test saw yesterday's readings as today's.
    now = datetime.now(UTC)
    tables = create_tables(db)
    seeder = Seeder(db, tables)
    period = _quarter(now)
    kpi = seeder.kpi("acme", "Signups", target=100.0, amber=90.0, interval="day")
    seeder.readings(
        "acme",
        kpi,
        [(now - timedelta(days=d, minutes=5), 40.0) for d in range(0, 20)]
        + [(now - timedelta(minutes=1), 70.0)],
    )
    foreign_kpi = seeder.kpi("globex", "Their KPI")
    company = seeder.objective(
        "acme",
        "Delight customers <script>alert(1)</script>",
        period=period,
        at=now,
        krs=[
            KR("metric", "NPS", start=0, target=10, current=6, kpi_id=kpi, aggregation="sum"),
            KR("milestone", "Launch", done=True),
        ],
    )
    department = seeder.objective(
        "acme", "Sales grows", level="department", owner="bo", parent_id=company,
        period=period, at=now, krs=[KR("metric", "Deals", start=0, target=100, current=10)],
    )  # fmt: skip
    team = seeder.objective(
        "acme", "Team ships", level="team", owner="cy", parent_id=department, period=period,
        at=now, krs=[KR("milestone", "Ship", done=True, weight=2)],
    )  # fmt: skip
    archived = seeder.objective("acme", "Old", state="archived", period=period, at=now)
    foreign = seeder.objective("globex", "Their secret", period=period, at=now)
    detections = [
        seeder.detection("acme", "over_reach", "forecast", department,
                         detected_at=now - timedelta(days=3)),
        seeder.detection("acme", "under_reach", "achieved_early", team,
                         detected_at=now - timedelta(days=2), resolved_at=now),
        seeder.detection("acme", "kpi_breach", "red", kpi, subject_type="kpi",
                         detected_at=now - timedelta(days=1)),
        seeder.detection("globex", "over_reach", "forecast", foreign,
                         detected_at=now - timedelta(days=1)),
    ]  # fmt: skip
    position = next(seeder.positions)
    set_position(db, tables, position, settings.kafka_partitions)
    app = create_app(settings)
    app.state.min_position_wait_s = 0.5
    tokens: TokenStore = app.state.tokens
    w = World(
        client=TestClient(app),
        db=db,
        tables=tables,
        seeder=seeder,
        settings=settings,
        token=tokens.create("acme", ["read"]),
        other=tokens.create("globex", ["read"]),
        writer_only=tokens.create("acme", ["write"]),
        company=company,
        department=department,
        team=team,
        archived=archived,
        foreign=foreign,
        kpi=kpi,
        foreign_kpi=foreign_kpi,
        detections=detections,
        position=position,
        now=now,
    )
    with w.client:
        yield w
    app.state.projection_db.close()
    tokens.close()
    db.close()


@pytest.fixture
def served(world: World) -> Iterator[str]:
    """The world's query app on a real uvicorn server (its URL), with quick SSE heartbeats."""
    app = world.client.app
    app.state.sse_heartbeat_s = 0.3  # type: ignore[attr-defined]
    with serve(app) as url:
        yield url

"""under_reach/achieved_early through the processor over a real SQLite projection store:
raised when the score reaches 1 while e < 0.5, kept raised across ticks at e >= 0.5 while
the score stays at 1, resolved when the score drops or the objective is closed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest

from services.processor.projector import TICK_START, Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from tests.unit.processor.builders import Log

JAN_20 = datetime(2026, 1, 20, tzinfo=UTC)  # e = 0.21 in Q1
FEB_15 = datetime(2026, 2, 15, tzinfo=UTC)  # e = 0.5 exactly
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)  # e = 0.66
Q1 = {"start": "2026-01-01", "end": "2026-03-31"}


def tick(p: Projector, now: datetime) -> None:
    p.clock = lambda: now
    after: tuple[str, str] | None = TICK_START
    while after is not None:
        after = p.tick_step(after, 10_000)


def apply_new(p: Projector, log: Log, seen: int, now: datetime) -> int:
    p.clock = lambda: now
    p.apply_goal_batch(log.goal_items()[seen:])
    return len(log.goal_items())


def active(p: Projector) -> set[str]:
    """Reasons of the active detections."""
    with p.db.transaction(write=False) as cur:
        rows = cur.execute("SELECT reason FROM g1_detections WHERE resolved_at IS NULL")
        return {str(r) for (r,) in rows.fetchall()}


def published(p: Projector) -> list[tuple[str, str, int]]:
    """(type, reason, stream version) of the detection events in the outbox, in order."""
    with p.db.transaction(write=False) as cur:
        values = [
            orjson.loads(v)
            for (v,) in cur.execute("SELECT value FROM g1_outbox ORDER BY seq").fetchall()
        ]
    return [
        (e["type"], e["reason"], e["stream_version"])
        for e in values
        if e["type"].startswith("detection.")
    ]


def achieved_in_january(tmp_path: Path) -> tuple[Projector, Log, UUID, UUID, int]:
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: JAN_20)
    log = Log()
    objective, kr = uuid4(), uuid4()
    log.emit("objective.drafted", objective, title="O", owner="ana", level="team", period=Q1)
    log.emit(
        "key_result.added", objective, kr_id=kr, title="K", kind="metric", start=0.0,
        target=10.0,
    )  # fmt: skip
    log.emit("key_result.checked_in", objective, at=JAN_20, kr_id=kr, value=10.0)
    seen = apply_new(p, log, 0, JAN_20)
    assert active(p) == {"achieved_early"}
    return p, log, objective, kr, seen


@pytest.mark.parametrize("end", ["score drops", "closed"])
def test_achieved_early_stays_raised_across_ticks_while_the_score_stays_at_1(
    tmp_path: Path, end: str
) -> None:
    p, log, objective, kr, seen = achieved_in_january(tmp_path)
    raised = [("detection.raised", "achieved_early", 1)]
    for now in (FEB_15, MAR_1):  # e = 0.5 exactly, then past it: still achieved early
        tick(p, now)
        assert active(p) == {"achieved_early"}
        assert published(p) == raised
    if end == "score drops":
        log.emit("key_result.checked_in", objective, at=MAR_1, kr_id=kr, value=9.0)
        apply_new(p, log, seen, MAR_1)
        assert active(p) == set()
        assert published(p) == [*raised, ("detection.resolved", "achieved_early", 2)]
        # Back to 1 after e = 0.5: not early, so not raised again.
        log.emit("key_result.checked_in", objective, at=MAR_1, kr_id=kr, value=10.0)
        apply_new(p, log, seen + 1, MAR_1)
        tick(p, MAR_1)
        assert active(p) == set()
        assert len(published(p)) == 2
    else:
        log.emit("objective.closed", objective, at=MAR_1)
        apply_new(p, log, seen, MAR_1)
        assert active(p) == {"final"}
        assert published(p) == [
            *raised,
            ("detection.raised", "final", 1),
            ("detection.resolved", "achieved_early", 2),
        ]

"""A goal event whose application fails on its own (a fold or evaluation bug) must not stop
the objective agent: its stream is parked with the error, its later events wait behind it,
every other stream flows, and a starting processor applies the parked events again. Against
a real SQLite file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.processor.projector import Projector
from services.processor.records import GoalItem, Watermark
from services.projectionstore.db import DatabaseUnavailableError
from services.projectionstore.schema import iso
from tests.unit.processor.builders import Log, synthetic
from tests.unit.processor.test_processor_projector import NOW, projector, tables_hash


class FailingOnStream(Projector):
    """A projector whose application of any goal event of `stream` raises `error`."""

    def __init__(self, p: Projector, stream: str, error: Exception) -> None:
        super().__init__(p.db, clock=p.clock)
        self.stream, self.error = stream, error

    def _recompute(self, tx: Any, ids: Any, before: Any, after: Any, applied: Any, *a: Any) -> None:
        if self.stream in applied:
            raise self.error
        super()._recompute(tx, ids, before, after, applied, *a)


def goal_mark(position: int) -> Watermark:
    return Watermark("goal", "okr.goal-events.v1", 0, -1, position)


def parked(p: Projector) -> list[tuple[str, int, str]]:
    with p.db.transaction(write=False) as cur:
        return [
            (str(s), int(v), str(e))
            for s, v, e in cur.execute(
                "SELECT stream_id, stream_version, error FROM g1_parked_events"
                " ORDER BY stream_id, stream_version"
            ).fetchall()
        ]


def objectives(p: Projector) -> set[str]:
    with p.db.transaction(write=False) as cur:
        rows = cur.execute("SELECT objective_id FROM g1_objectives").fetchall()
        return {str(o) for (o,) in rows}


def goal_watermark(p: Projector) -> int | None:
    with p.db.transaction(write=False) as cur:
        row = cur.execute("SELECT position FROM g1_watermarks WHERE stage = 'goal'").fetchone()
    return None if row is None else int(row[0])


def two_takes(log: Log, stream: str) -> tuple[list[GoalItem], list[GoalItem]]:
    """The log's goal events in two takes, `stream`'s events split between them."""
    items = log.goal_items()
    of_stream = [i for i, item in enumerate(items) if str(item.event.stream_id) == stream]
    cut = of_stream[len(of_stream) // 2]
    return items[:cut], items[cut:]


def test_a_failing_stream_is_parked_and_the_rest_flow(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    ids, _ = synthetic(log, objectives=4, kpis=2, readings=0)
    a, b, c, d = (str(o) for o in ids)
    first, second = two_takes(log, b)
    failing = FailingOnStream(p, b, ValueError("a fold bug"))

    with pytest.raises(ValueError, match="a fold bug"):
        failing.apply_goal_take(first, [], [goal_mark(10)])
    assert objectives(failing) == set(), "the failed take changed nothing"
    deferred, streams = failing.apply_goal_take_by_stream(first, [], [goal_mark(10)])
    assert (deferred, streams) == (False, [b])
    assert b not in objectives(failing)
    assert a in objectives(failing), "the streams before and after it flow"
    b_first = [i.event.stream_version for i in first if str(i.event.stream_id) == b]
    assert [(s, v) for s, v, _ in parked(failing)] == [(b, v) for v in b_first]
    assert all("ValueError: a fold bug" in e for _, _, e in parked(failing))
    assert goal_watermark(failing) == 10

    # The stream's later events wait behind its parked ones, without failing the take.
    failing.apply_goal_take(second, [], [goal_mark(20)])
    assert objectives(failing) == {a, c, d}
    b_all = [i.event.stream_version for i in first + second if str(i.event.stream_id) == b]
    assert [(s, v) for s, v, _ in parked(failing)] == [(b, v) for v in b_all]
    assert parked(failing)[-1][2] == "waits behind the stream's parked goal events"
    assert goal_watermark(failing) == 20

    # Still failing at a restart: the events stay parked, in order.
    assert failing.retry_parked() == 0
    assert len(parked(failing)) == len(b_all)

    # The fix deployed: a starting processor applies them, and the projections equal those
    # of a processor that never failed.
    fixed = projector(tmp_path / "p.sqlite")
    assert fixed.retry_parked() == 1
    assert parked(fixed) == []
    assert objectives(fixed) == {a, b, c, d}
    clean = projector(tmp_path / "clean.sqlite")
    clean.apply_goal_take(first + second, [], [goal_mark(20)])
    assert tables_hash(fixed, strict=False) == tables_hash(clean, strict=False)


def test_a_database_that_fails_parks_nothing(tmp_path: Path) -> None:
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    ids, _ = synthetic(log, objectives=2, kpis=1, readings=0)
    failing = FailingOnStream(p, str(ids[1]), DatabaseUnavailableError("disk I/O error"))
    with pytest.raises(DatabaseUnavailableError):
        failing.apply_goal_take_by_stream(log.goal_items(), [], [goal_mark(5)])
    assert parked(failing) == []
    assert goal_watermark(failing) is None, "the take is not acknowledged: redelivered"


class FailingToEvaluate(Projector):
    """A projector whose evaluation of objective `objective` raises (an evaluation bug)."""

    def __init__(self, p: Projector, objective: str) -> None:
        super().__init__(p.db, clock=p.clock)
        self.objective = objective

    def _recompute(self, tx: Any, ids: Any, *args: Any) -> None:
        if self.objective in ids:
            raise ValueError("an evaluation bug")
        super()._recompute(tx, ids, *args)


def test_a_kpi_event_is_applied_when_an_objective_measuring_it_fails(tmp_path: Path) -> None:
    """The KPI's stream is not parked for another objective's bug: the KPI event applies,
    the objectives measuring it are re-evaluated one at a time, and the failing one is set
    aside (a starting processor tries it again)."""
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    ids, kpis = synthetic(log, objectives=3, kpis=1, readings=0)
    p.apply_goal_take(log.goal_items(), [], [goal_mark(5)])
    a, b, c = (str(o) for o in ids)
    log.emit("kpi.retargeted", kpis[0], target=500.0, amber=400.0)
    (retarget,) = log.goal_items()[-1:]
    later = NOW + timedelta(hours=1)
    failing = FailingToEvaluate(projector(tmp_path / "p.sqlite", now=later), b)
    with pytest.raises(ValueError, match="an evaluation bug"):
        failing.apply_goal_take([retarget], [], [goal_mark(6)])
    assert failing.apply_goal_take_by_stream([retarget], [], [goal_mark(6)]) == (False, [])
    assert parked(failing) == []
    with failing.db.transaction(write=False) as cur:
        assert cur.execute("SELECT target, version FROM g1_kpis").fetchone() == (500.0, 2)
        aside = cur.execute("SELECT objective_id, event_id, error FROM g1_set_aside").fetchall()
        evaluated = dict(
            cur.execute("SELECT objective_id, evaluated_at FROM g1_objectives").fetchall()
        )
    assert [(o, e) for o, e, _ in aside] == [(b, "")]
    assert "ValueError: an evaluation bug" in aside[0][2]
    assert goal_watermark(failing) == 6
    assert evaluated == {a: iso(later), b: iso(NOW), c: iso(later)}, "the others re-evaluated"
    fixed = projector(tmp_path / "p.sqlite")
    assert fixed.retry_set_aside() == 1
    while fixed.evaluate_pending(10**12, 10)[1]:
        pass
    with fixed.db.transaction(write=False) as cur:
        assert cur.execute("SELECT COUNT(*) FROM g1_set_aside").fetchone() == (0,)


class NotEvaluating(Projector):
    """A projector that stops, as it were, after applying KPI events: the objectives
    measuring them are not re-evaluated (what _kpi_alone commits first)."""

    def goal_batch_in(self, tx: Any, items: Any, notices: Any, **_: Any) -> None:
        self._apply_kpi_events(tx, items)


def test_a_redelivered_kpi_event_reevaluates_the_objectives_measuring_it(
    tmp_path: Path,
) -> None:
    """A KPI's events committed without the re-evaluation of the objectives measuring it
    (the stream-by-stream retry commits them apart, and a crash may come in between): the
    redelivery re-evaluates them."""
    p = projector(tmp_path / "p.sqlite")
    log = Log()
    ids, kpis = synthetic(log, objectives=2, kpis=1, readings=0)
    p.apply_goal_take(log.goal_items(), [], [])
    log.emit("kpi.retargeted", kpis[0], target=500.0, amber=400.0)
    retarget = log.goal_items()[-1:]
    skipped = NotEvaluating(p.db, clock=lambda: NOW + timedelta(hours=1))
    skipped.apply_goal_take(retarget, [], [])
    later = NOW + timedelta(hours=2)
    projector(tmp_path / "p.sqlite", now=later).apply_goal_take(retarget, [], [])
    with p.db.transaction(write=False) as cur:
        assert cur.execute("SELECT version FROM g1_kpis").fetchone() == (2,)
        evaluated = dict(
            cur.execute("SELECT objective_id, evaluated_at FROM g1_objectives").fetchall()
        )
    assert evaluated == {str(o): iso(later) for o in ids}

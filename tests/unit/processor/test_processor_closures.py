"""Owners' closed objectives (the chronic over/under-reach rules): an objective is listed
under its current owner only, and every owner whose list changes is judged again, however
the goal events are split into batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from services.processor.projector import Projector
from services.projectionstore.db import Database
from services.projectionstore.meta import ensure_schema
from tests.unit.processor.builders import Log

NOW = datetime(2026, 2, 15, 22, tzinfo=UTC)
T = datetime(2026, 1, 5, tzinfo=UTC)
PERIOD = {"start": "2026-01-01", "end": "2026-03-31"}


def _two_closed(log: Log) -> tuple[UUID, UUID]:
    """ana closes two objectives at score 0: chronic over-reach."""
    a, b = uuid4(), uuid4()
    for o in (a, b):
        log.emit("objective.drafted", o, at=T, title="O", owner="ana", level="team", period=PERIOD)
        log.emit("key_result.added", o, at=T, kr_id=uuid4(), title="K", kind="milestone")
    log.emit("objective.closed", a, at=T + timedelta(days=1))
    log.emit("objective.closed", b, at=T + timedelta(days=2))
    return a, b


def _state(p: Projector) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(owner, objective) closures, and (owner, reason) of the active owner detections."""
    with p.db.transaction(write=False) as cur:
        closures = {
            (str(o), str(i))
            for o, i in cur.execute("SELECT owner, objective_id FROM g1_owner_closures").fetchall()
        }
        active = {
            (str(s), str(r))
            for s, r in cur.execute(
                "SELECT subject_id, reason FROM g1_detections"
                " WHERE subject_type = 'owner' AND resolved_at IS NULL"
            ).fetchall()
        }
    return closures, active


@pytest.mark.parametrize("close_again", [False, True])
@pytest.mark.parametrize("one_batch", [True, False])
def test_a_reopen_and_a_new_owner_move_the_closure_and_rejudge_both_owners(
    tmp_path: Path, close_again: bool, one_batch: bool
) -> None:
    log = Log()
    a, b = _two_closed(log)
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: NOW)
    p.apply_goal_batch(log.goal_items())
    assert _state(p)[1] == {("ana", "chronic")}
    n = len(log.entries)
    log.emit("objective.reopened", b, at=T + timedelta(days=3))
    log.emit("objective.revised", b, at=T + timedelta(days=3), owner="bob")
    if close_again:
        log.emit("objective.closed", b, at=T + timedelta(days=4))
    later = log.goal_items()[n:]
    for batch in [later] if one_batch else [[item] for item in later]:
        p.apply_goal_batch(batch)
    closures, active = _state(p)
    expected = {("ana", str(a))} | ({("bob", str(b))} if close_again else set())
    assert closures == expected
    assert active == set(), "ana has one closed objective left, bob at most one"
    db.close()


def _chronic(p: Projector) -> set[tuple[str, str, bool]]:
    """(org, owner, active) of the chronic detections."""
    with p.db.transaction(write=False) as cur:
        return {
            (str(org), str(owner), resolved is None)
            for org, owner, resolved in cur.execute(
                "SELECT org_id, subject_id, resolved_at FROM g1_detections"
                " WHERE subject_type = 'owner' AND reason = 'chronic'"
            ).fetchall()
        }


def test_owners_of_one_name_in_two_organisations_are_judged_apart(tmp_path: Path) -> None:
    """Owners are names, unique within an organisation only: "ana" of org-a and "ana" of
    org-b are two subjects, also when one batch (a pass spans organisations) judges both."""
    la, lb = Log(org="org-a"), Log(org="org-b")
    _, a2 = _two_closed(la)
    _two_closed(lb)
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: NOW)
    p.apply_goal_batch([*la.goal_items(), *lb.goal_items()])
    assert _chronic(p) == {("org-a", "ana", True), ("org-b", "ana", True)}
    n = len(la.entries)
    la.emit("objective.reopened", a2, at=T + timedelta(days=3))
    m = len(lb.entries)
    _two_closed(lb)  # org-b's ana stays chronic, judged in the same batch
    p.apply_goal_batch([*la.goal_items()[n:], *lb.goal_items()[m:]])
    assert _chronic(p) == {("org-a", "ana", False), ("org-b", "ana", True)}
    db.close()


@pytest.mark.parametrize("one_batch", [True, False])
def test_an_objective_archived_after_its_close_stays_in_its_owners_closures(
    tmp_path: Path, one_batch: bool
) -> None:
    """Live, a close and an archive usually come in separate batches; a replay folds them
    in one. Either way the archived objective keeps its place among its owner's closed
    objectives, and the chronic detection it completes."""
    log = Log()
    a, b = _two_closed(log)
    log.emit("objective.archived", a, at=T + timedelta(days=3))
    db = Database("sqlite", path=tmp_path / "p.sqlite")
    ensure_schema(db)
    p = Projector(db, clock=lambda: NOW)
    items = log.goal_items()
    for batch in [items] if one_batch else [[item] for item in items]:
        p.apply_goal_batch(batch)
    closures, active = _state(p)
    assert closures == {("ana", str(a)), ("ana", str(b))}
    assert active == {("ana", "chronic")}
    db.close()

"""Objective and Kpi aggregates: the events each command decides and the invariants."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events
from contracts.http import KpiCreate, check_amber, default_amber
from services.command import kpi as kpis
from services.command import objective as objectives
from services.command.decisions import Context, Ids, Invalid, NotFound, Refused, stamp
from services.command.kpi import Kpi
from services.command.objective import Objective

NOW = datetime(2026, 2, 1, tzinfo=UTC)
PERIOD = {"start": date(2026, 1, 1), "end": date(2026, 3, 31)}


def ctx(org: str = "acme") -> Context:
    return Context(org_id=org, occurred_at=NOW, recorded_at=NOW)


def apply(state: Objective, pending: list[Any]) -> tuple[Objective, list[events.Event]]:
    new = stamp(state.id, state.version, state.last_hash, ctx(state.org_id), pending)
    return objectives.fold_onto(state, new), new


KNOWN: dict[uuid.UUID, Objective] = {}


def new_objective(org: str = "acme", parent: uuid.UUID | None = None, **kw: Any) -> Objective:
    oid = uuid.uuid4()
    fields = {"title": "Grow", "owner": "ana", "level": "team", "parent_id": parent,
              "period": PERIOD, **kw}  # fmt: skip
    pending = objectives.draft(oid, org, fields, KNOWN.get)
    drafted = stamp(oid, 0, None, ctx(org), pending)
    state = objectives.fold(drafted)
    assert state is not None
    KNOWN[oid] = state
    return state


def with_kr(state: Objective, **fields: Any) -> tuple[Objective, uuid.UUID]:
    kr_id = uuid.uuid4()
    state, _ = apply(state, objectives.add_key_result(state, kr_id, fields, None))
    return state, kr_id


def metric(state: Objective) -> tuple[Objective, uuid.UUID]:
    return with_kr(state, title="Revenue", kind="metric", start=0.0, target=10.0)


def live_kpi(org: str = "acme", retired: bool = False) -> Kpi:
    return Kpi(uuid.uuid4(), org, 1, "h", "K", "increase", 10.0, 9.0, "week", "avg", retired)


def test_stamped_events_continue_versions_and_the_hash_chain() -> None:
    state = new_objective()
    state, new = apply(state, objectives.revise(state, {"title": "Grow more"}, lambda _: None))
    state, more = apply(state, objectives.close(state, "done"))
    assert [e.stream_version for e in new + more] == [2, 3]
    assert new[0].prev_hash is not None
    assert more[0].prev_hash == new[0].hash
    assert state.title == "Grow more"
    assert state.state == "closed"
    assert state.version == 3


def test_a_null_description_clears_it_in_the_aggregate_and_the_view() -> None:
    """PATCH {"description": null} was refused as "nothing to change": the description of
    an objective could be set but never cleared."""
    from projections.objective import fold as view_fold

    state = new_objective(description="first draft")
    drafted = stamp(state.id, 0, None, ctx(), objectives.draft(
        state.id, "acme", {"title": "Grow", "owner": "ana", "level": "team",
                           "period": PERIOD, "description": "first draft"}, KNOWN.get,
    ))  # fmt: skip
    cleared, new = apply(state, objectives.revise(state, {"description": None}, lambda _: None))
    assert [(e.type, e.description) for e in new] == [("objective.revised", "")]
    assert cleared.description is None
    view = view_fold([*drafted, *new])
    assert view is not None
    assert view.description is None
    kept, more = apply(cleared, objectives.revise(cleared, {"title": "t"}, lambda _: None))
    assert kept.description is None, "a PATCH without it leaves it as it is"
    assert more[0].description is None


def test_a_parent_that_would_make_a_cycle_is_refused() -> None:
    root = new_objective()
    child = new_objective(parent=root.id)
    grandchild = new_objective(parent=child.id)
    known = {o.id: o for o in (root, child, grandchild)}
    with pytest.raises(Refused, match="cycle"):
        objectives.revise(root, {"parent_id": grandchild.id}, known.get)
    with pytest.raises(Refused, match="cycle"):
        objectives.revise(root, {"parent_id": root.id}, known.get)
    pending = objectives.revise(grandchild, {"parent_id": root.id}, known.get)
    assert pending == [(events.ObjectiveRealigned, {"parent_id": root.id})]


def test_a_parent_in_another_organisation_is_refused_like_an_unknown_one() -> None:
    foreign = new_objective(org="globex")
    mine = new_objective()
    with pytest.raises(Refused, match="does not exist in this organisation"):
        objectives.revise(mine, {"parent_id": foreign.id}, {foreign.id: foreign}.get)
    with pytest.raises(Refused, match="does not exist"):
        objectives.draft(uuid.uuid4(), "acme", {"parent_id": uuid.uuid4()}, lambda _: None)


def test_an_archived_objective_takes_no_children() -> None:
    """A new child of an archived objective (or one moved under it) was accepted: the
    archived parent's view listed it, its tree did not."""
    active = new_objective()
    parent, _ = apply(active, objectives.archive(active))
    assert parent.state == "archived"
    known = {parent.id: parent}
    with pytest.raises(Refused, match="is archived"):
        objectives.draft(uuid.uuid4(), "acme", {"parent_id": parent.id}, known.get)
    with pytest.raises(Refused, match="is archived"):
        objectives.revise(new_objective(), {"parent_id": parent.id}, known.get)
    # An archived grandparent does not stand in the way of an active parent.
    child = new_objective(parent=parent.id)
    assert objectives.draft(
        uuid.uuid4(), "acme", {"parent_id": child.id}, {**known, child.id: child}.get
    )


def test_archived_objectives_take_no_commands() -> None:
    state, kr = metric(new_objective())
    state, _ = apply(state, objectives.archive(state))
    for command in (
        lambda: objectives.close(state, None),
        lambda: objectives.reopen(state),
        lambda: objectives.archive(state),
        lambda: objectives.check_in(state, kr, {"value": 1.0}),
        lambda: objectives.revise(state, {"title": "x"}, lambda _: None),
        lambda: objectives.remove_key_result(state, kr),
    ):
        with pytest.raises(Refused, match="archived"):
            command()


def test_close_and_reopen_transitions() -> None:
    state = new_objective()
    with pytest.raises(Refused):
        objectives.reopen(state)
    state, _ = apply(state, objectives.close(state, None))
    with pytest.raises(Refused, match="closed"):
        objectives.close(state, None)
    state, new = apply(state, objectives.reopen(state))
    assert isinstance(new[0], events.ObjectiveReopened)
    assert state.state == "active"


def test_check_ins_must_fit_the_key_result_kind() -> None:
    state, kr = metric(new_objective())
    state, ms = with_kr(state, title="Launch", kind="milestone")
    with pytest.raises(Refused, match="value, not done"):
        objectives.check_in(state, kr, {"done": True})
    with pytest.raises(Refused, match="done, not a value"):
        objectives.check_in(state, ms, {"value": 3.0})
    with pytest.raises(Refused, match="needs done"):
        objectives.check_in(state, ms, {"confidence": 0.5})
    with pytest.raises(NotFound):
        objectives.check_in(state, uuid.uuid4(), {"value": 1.0})
    pending = objectives.check_in(state, kr, {"value": 4.0, "confidence": 0.8})
    assert pending == [(events.KeyResultCheckedIn, {"kr_id": kr, "value": 4.0, "confidence": 0.8})]


def test_key_result_links_need_a_live_kpi_of_the_organisation() -> None:
    state = new_objective()
    fields = {"title": "NPS", "kind": "metric", "start": 0.0, "target": 5.0}
    for kpi, why in ((live_kpi(retired=True), "retired"), (live_kpi("globex"), "does not exist")):
        with pytest.raises(Refused, match=why):
            objectives.add_key_result(state, uuid.uuid4(), {**fields, "kpi_id": kpi.id}, kpi)
    with pytest.raises(Refused, match="does not exist"):
        objectives.add_key_result(state, uuid.uuid4(), {**fields, "kpi_id": uuid.uuid4()}, None)
    kpi = live_kpi()
    [(cls, payload)] = objectives.add_key_result(
        state, uuid.uuid4(), {**fields, "kpi_id": kpi.id}, kpi
    )
    assert cls is events.KeyResultAdded
    assert payload["aggregation"] == "avg", "the KPI's aggregation is the default"


def test_update_key_result_splits_into_revised_retargeted_reweighted() -> None:
    state, kr = metric(new_objective())
    pending = objectives.update_key_result(
        state, kr, {"title": "T", "target": 20.0, "weight": 2.0, "reason": "r"}
    )
    assert [cls for cls, _ in pending] == [
        events.KeyResultRevised,
        events.KeyResultRetargeted,
        events.KeyResultReweighted,
    ]
    state, _ = apply(state, pending)
    assert state.key_results[kr].target == 20.0
    assert state.key_results[kr].weight == 2.0
    with pytest.raises(Refused, match="start ≠ target"):
        objectives.update_key_result(state, kr, {"start": 20.0})
    state, ms = with_kr(state, title="Launch", kind="milestone")
    with pytest.raises(Refused, match="milestone"):
        objectives.update_key_result(state, ms, {"target": 1.0})
    with pytest.raises(Invalid):
        objectives.update_key_result(state, kr, {"reason": "nothing else"})


def test_removed_key_results_are_gone() -> None:
    state, kr = metric(new_objective())
    state, _ = apply(state, objectives.remove_key_result(state, kr))
    assert kr not in state.key_results
    with pytest.raises(NotFound):
        objectives.remove_key_result(state, kr)


def test_promote_defines_a_linked_kpi_with_the_default_amber() -> None:
    state, kr = with_kr(new_objective(), title="Churn", kind="metric", start=10.0, target=4.0)
    kpi_id = uuid.uuid4()
    on_objective, on_kpi = objectives.promote(state, kr, kpi_id, None, None)
    assert on_objective == [(events.KeyResultPromoted, {"kr_id": kr, "kpi_id": kpi_id})]
    [(cls, payload)] = on_kpi
    assert cls is events.KpiDefined
    assert payload["direction"] == "decrease"
    assert payload["target"] == 4.0
    assert payload["amber"] == pytest.approx(4.4)
    assert payload["promoted_from_objective_id"] == state.id
    assert payload["promoted_from_kr_id"] == kr
    state, _ = apply(state, on_objective)
    assert state.key_results[kr].kpi_id == kpi_id
    with pytest.raises(Refused, match="already promoted"):
        objectives.promote(state, kr, uuid.uuid4(), None, None)
    state, ms = with_kr(state, title="Launch", kind="milestone")
    with pytest.raises(Refused, match="milestone"):
        objectives.promote(state, ms, uuid.uuid4(), None, None)


def test_fold_ignores_non_objective_streams_and_refuses_foreign_events() -> None:
    kpi_events = stamp(uuid.uuid4(), 0, None, ctx(), kpis.define(
        {"name": "K", "direction": "increase", "target": 10.0, "interval": "day",
         "aggregation": "sum"}))  # fmt: skip
    assert objectives.fold(kpi_events) is None
    state = new_objective()
    with pytest.raises(TypeError):
        objectives.fold_onto(state, kpi_events)


# -- Kpi ---------------------------------------------------------------------------------


def kpi_state(direction: str = "increase", **kw: Any) -> Kpi:
    fields = {"name": "K", "direction": direction, "target": 100.0, "interval": "week",
              "aggregation": "sum", **kw}  # fmt: skip
    state = kpis.fold(stamp(uuid.uuid4(), 0, None, ctx(), kpis.define(fields)))
    assert state is not None
    return state


@pytest.mark.parametrize(("direction", "amber"), [("increase", 90.0), ("decrease", 110.0)])
def test_define_defaults_amber_by_direction(direction: str, amber: float) -> None:
    assert kpi_state(direction).amber == pytest.approx(amber)
    assert kpi_state(direction, amber=95.0 if direction == "increase" else 105.0).amber != amber


@pytest.mark.parametrize(
    ("direction", "target", "amber"),
    [
        ("increase", 100.0, 90.0),
        ("decrease", 100.0, 110.0),
        ("increase", -100.0, -110.0),  # 90 % of the magnitude below, not -90 (above it)
        ("decrease", -100.0, -90.0),
        ("increase", 0.0, 0.0),  # no magnitude: no amber band unless one is given
        ("decrease", -0.0, 0.0),
        ("increase", 13.0, 11.7),  # correctly rounded: 13 * 0.9 is 11.700000000000001
        ("decrease", 3.0, 3.3),  # and 3 * 1.1 is 3.3000000000000003
    ],
)
def test_default_amber_is_90_or_110_percent_of_the_magnitude(
    direction: str, target: float, amber: float
) -> None:
    state = kpi_state(direction, target=target)
    assert state.amber == amber
    assert str(state.amber) == str(amber)
    # The default passes the server's own amber rule: giving it back is accepted.
    [(cls, payload)] = kpis.revise(state, {"amber": state.amber})
    assert (cls, payload["amber"]) == (events.KpiRetargeted, amber)
    # A retarget without an amber gets the default too.
    [(_, payload)] = kpis.revise(kpi_state(direction), {"target": target})
    assert payload["amber"] == amber


@settings(max_examples=300, deadline=None)
@given(
    direction=st.sampled_from(["increase", "decrease"]),
    target=st.floats(min_value=-1e15, max_value=1e15),  # the limit of a target
)
def test_default_amber_always_lies_on_the_losing_side(direction: str, target: float) -> None:
    amber = default_amber(direction, target)
    check_amber(direction, target, amber)
    magnitude = abs(Fraction(target))
    step = magnitude / 10 if direction == "decrease" else -magnitude / 10
    assert amber == float(Fraction(target) + step)  # target ∓ |target|/10, rounded once
    if target > 0:  # API.md's words exactly: 90 % / 110 % of the target
        assert amber == float(Fraction(target) * (9 if direction == "increase" else 11) / 10)
    # Within the limit of an explicit amber, so the default can always be given back.
    KpiCreate.model_validate({"name": "K", "direction": direction, "target": target,
                              "amber": amber, "interval": "day", "aggregation": "sum"})  # fmt: skip


def test_revise_splits_names_from_targets_and_defaults_amber() -> None:
    state = kpi_state()
    pending = kpis.revise(state, {"name": "N", "target": 200.0})
    assert [cls for cls, _ in pending] == [events.KpiRevised, events.KpiRetargeted]
    assert pending[1][1]["amber"] == pytest.approx(180.0)
    [(cls, payload)] = kpis.revise(state, {"amber": 50.0})
    assert cls is events.KpiRetargeted
    assert (payload["target"], payload["amber"]) == (100.0, 50.0)
    with pytest.raises(Invalid):
        kpis.revise(state, {"amber": 150.0})


@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_a_chosen_amber_survives_a_retargeting_that_gives_none(direction: str) -> None:
    up = direction == "increase"
    chosen = kpi_state(direction, amber=70.0 if up else 130.0)
    [(_, payload)] = kpis.revise(chosen, {"target": 120.0 if up else 80.0})
    assert payload["amber"] == (70.0 if up else 130.0)  # not reset to 90 % of 120
    # A new target the chosen amber no longer fits: a clear refusal, not a silent reset.
    with pytest.raises(Invalid, match="give an amber with the target"):
        kpis.revise(chosen, {"target": 60.0 if up else 140.0})
    [(_, payload)] = kpis.revise(
        chosen, {"target": 60.0 if up else 140.0, "amber": 50.0 if up else 150.0}
    )
    assert payload["amber"] == (50.0 if up else 150.0)
    # The default amber follows the target.
    [(_, payload)] = kpis.revise(kpi_state(direction), {"target": 60.0})
    assert payload["amber"] == (54.0 if up else 66.0)


def test_retired_kpis_take_no_commands() -> None:
    state = kpi_state()
    retired = kpis.fold(
        [
            *stamp(state.id, 0, None, ctx(), kpis.define({"name": "K", "direction": "increase",
                   "target": 1.0, "interval": "day", "aggregation": "sum"})),
            *stamp(state.id, 1, None, ctx(), kpis.retire(state, "gone")),
        ]
    )  # fmt: skip
    assert retired is not None
    assert retired.retired
    assert retired.version == 2
    with pytest.raises(Refused, match="retired"):
        kpis.retire(retired, None)
    with pytest.raises(Refused, match="retired"):
        kpis.revise(retired, {"name": "x"})


def test_ids_are_derived_from_the_idempotency_seed() -> None:
    a, b = Ids("acme\x00key"), Ids("acme\x00key")
    assert (a.resource(), a.event(), a.event()) == (b.resource(), b.event(), b.event())
    assert Ids("acme\x00other").resource() != Ids("acme\x00key").resource()
    assert Ids().event() != Ids().event()

"""Running commands against the event store: load, decide, append, retry on conflicts.

Optimistic concurrency: an append that finds its stream version taken raises
ConcurrencyError. Without If-Match the command is re-run on the fresh state; with If-Match
the caller asked for that exact version, so the answer is 412. A command that keeps losing
the race (many clients writing one stream) runs its next attempts under the process's lock
of that stream (CommandService._gate), where it competes only with first attempts and
other processes: a valid command is applied, not refused. Should it wait for the gate
longer than GATE_WAIT_S, or not succeed within MAX_ATTEMPTS, the answer is Contended (503
with Retry-After), never a 409: no invariant was broken.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import events
from services.command import kpi as kpi_aggregate
from services.command import objective as objective_aggregate
from services.command.decisions import Context, Ids, NotFound, Refused, stamp
from services.command.kpi import Kpi
from services.command.objective import Objective
from services.eventstore import ConcurrencyError, EventStore

OPTIMISTIC_ATTEMPTS = 3  # then under the stream's lock
MAX_ATTEMPTS = 50
GATE_WAIT_S = 10.0  # the longest a command queues for its stream's gate (then 503)
BACKOFF_S = 0.003  # × attempt (at most 10), jittered: writers stop colliding in lockstep


class Contended(Exception):  # noqa: N818
    """The command lost the race for its stream MAX_ATTEMPTS times, or waited for its gate
    longer than GATE_WAIT_S (HTTP 503: retry)."""

    def __init__(self) -> None:
        super().__init__("too many concurrent changes to this resource; try again")


class Stale(Exception):  # noqa: N818
    """If-Match named another version than the current one (HTTP 412)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the current version is {current}")
        self.current = current


@dataclass(frozen=True, slots=True)
class Outcome:
    """The events a command appended (or had appended before, under the same key and
    request)."""

    events: list[events.Event]
    position: int

    @property
    def version(self) -> int:
        """The new version of the stream the command addressed (its first event's)."""
        primary = self.events[0].stream_id
        return max(e.stream_version for e in self.events if e.stream_id == primary)


def _recovered(stream: Sequence[events.Event], ids: Ids) -> list[events.Event]:
    """Events of `stream` that an earlier run of the same request under the same
    Idempotency-Key appended (the seed holds the organisation, key and request fingerprint,
    so another request under an expired key finds nothing here)."""
    if ids.seed is None:
        return []
    wanted = ids.derived("event", 0)
    for i, event in enumerate(stream):
        if event.event_id == wanted:
            found = [event]
            for n, later in enumerate(stream[i + 1 :], start=1):
                if later.event_id != ids.derived("event", n):
                    break
                found.append(later)
            return found
    return []


def hierarchy_lock(org_id: str) -> str:
    """The name of the store lock that serialises re-parenting in `org_id`."""
    return f"objective-hierarchy:{org_id}"


Decide = Callable[[list[events.Event], Callable[[int], None]], list[events.Event]]


class CommandService:
    """The write model: every goal command, on an EventStore."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._gates: dict[UUID, list[Any]] = {}  # stream id -> [lock, users] (_gate)
        self._gates_guard = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    def objective(self, objective_id: UUID) -> Objective | None:
        return objective_aggregate.fold(self.store.read_stream(objective_id))

    def kpi(self, kpi_id: UUID) -> Kpi | None:
        return kpi_aggregate.fold(self.store.read_stream(kpi_id))

    # -- the loop --------------------------------------------------------------------------

    def execute(
        self, context: Context, stream_id: UUID, if_match: int | None, decide: Decide
    ) -> Outcome:
        """Load `stream_id`, decide new events, append; retry on conflicts without If-Match."""

        def expect(version: int) -> None:
            if if_match is not None and if_match != version:
                raise Stale(version)

        done = self._attempts(context, stream_id, if_match, decide, expect, OPTIMISTIC_ATTEMPTS)
        if done is None:
            with self._gate(stream_id):
                done = self._attempts(context, stream_id, if_match, decide, expect, MAX_ATTEMPTS)
        if done is None:
            raise Contended()
        return done

    @contextmanager
    def _gate(self, stream_id: UUID) -> Iterator[None]:
        """This process's lock of one stream, for the commands that lost its race: they
        take turns, competing only with first attempts and other processes. Not a store
        lock: that would hold up the writers of every other stream and organisation."""
        with self._gates_guard:
            gate = self._gates.setdefault(stream_id, [threading.Lock(), 0])
            gate[1] += 1
        try:
            if not gate[0].acquire(timeout=GATE_WAIT_S):
                raise Contended()
            try:
                yield
            finally:
                gate[0].release()
        finally:
            with self._gates_guard:
                gate[1] -= 1
                if gate[1] == 0:
                    del self._gates[stream_id]

    def _attempts(
        self,
        context: Context,
        stream_id: UUID,
        if_match: int | None,
        decide: Decide,
        expect: Callable[[int], None],
        attempts: int,
    ) -> Outcome | None:
        """Up to `attempts` runs of the command (the first at once); None when every one
        found its stream version taken."""
        for attempt in range(attempts):
            if attempt:
                time.sleep(random.uniform(0, BACKOFF_S * min(attempt, 10)))
            context.ids.restart()
            stream = self.store.read_stream(stream_id)
            found = _recovered(stream, context.ids)
            if found:
                # Position of the earlier append is not kept with the stream; the newest
                # position is a safe upper bound for read-your-writes.
                return Outcome(found, self.store.max_position())
            new = decide(stream, expect)
            try:
                position = self.store.append(new)
            except ConcurrencyError:
                if if_match is not None:
                    current = self.store.read_stream(stream_id)
                    raise Stale(current[-1].stream_version if current else 0) from None
                continue
            return Outcome(new, position)
        return None

    def _on_objective(
        self,
        context: Context,
        objective_id: UUID,
        if_match: int | None,
        decide: Callable[[Objective], list[events.Event]],
    ) -> Outcome:
        def run(stream: list[events.Event], expect: Callable[[int], None]) -> list[events.Event]:
            state = objective_aggregate.fold(stream)
            if state is None or state.org_id != context.org_id:
                raise NotFound(f"objective {objective_id} not found")
            expect(state.version)
            return decide(state)

        return self.execute(context, objective_id, if_match, run)

    def _objective_events(
        self, context: Context, state: Objective, pending: list[Any]
    ) -> list[events.Event]:
        new = stamp(state.id, state.version, state.last_hash, context, pending)
        for event in new:  # the fold must accept what the command decided
            state = objective_aggregate.evolve(state, event)
        return new

    # -- objectives ------------------------------------------------------------------------

    def create_objective(
        self, context: Context, objective_id: UUID, fields: dict[str, Any]
    ) -> Outcome:
        def run(stream: list[events.Event], expect: Callable[[int], None]) -> list[events.Event]:
            if stream:
                raise Refused(f"objective {objective_id} already exists")
            expect(0)
            pending = objective_aggregate.draft(
                objective_id, context.org_id, fields, self.objective
            )
            return stamp(objective_id, 0, None, context, pending)

        return self.execute(context, objective_id, None, run)

    def revise_objective(
        self, context: Context, objective_id: UUID, if_match: int | None, changes: dict[str, Any]
    ) -> Outcome:
        def revise() -> Outcome:
            return self._on_objective(
                context,
                objective_id,
                if_match,
                lambda s: self._objective_events(
                    context, s, objective_aggregate.revise(s, changes, self.objective)
                ),
            )

        if changes.get("parent_id") is None:
            return revise()
        # The cycle check reads the parent's ancestors, but the append touches only this
        # objective's stream, so optimistic concurrency cannot see two re-parentings that
        # make a cycle together (A under B and B under A): every re-parenting in the
        # organisation reads, checks and appends under one lock instead. A new objective
        # needs none: nothing can be under an id that does not exist yet.
        with self.store.serialised(hierarchy_lock(context.org_id)):
            return revise()

    def close_objective(
        self, context: Context, objective_id: UUID, if_match: int | None, note: str | None
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(context, s, objective_aggregate.close(s, note)),
        )

    def reopen_objective(
        self, context: Context, objective_id: UUID, if_match: int | None
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(context, s, objective_aggregate.reopen(s)),
        )

    def archive_objective(
        self, context: Context, objective_id: UUID, if_match: int | None
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(context, s, objective_aggregate.archive(s)),
        )

    # -- key results -----------------------------------------------------------------------

    def add_key_result(
        self,
        context: Context,
        objective_id: UUID,
        kr_id: UUID,
        if_match: int | None,
        fields: dict[str, Any],
    ) -> Outcome:
        kpi_id = fields.get("kpi_id")

        def decide(s: Objective) -> list[events.Event]:
            linked = self.kpi(kpi_id) if kpi_id is not None else None
            pending = objective_aggregate.add_key_result(s, kr_id, fields, linked)
            return self._objective_events(context, s, pending)

        return self._on_objective(context, objective_id, if_match, decide)

    def update_key_result(
        self,
        context: Context,
        objective_id: UUID,
        kr_id: UUID,
        if_match: int | None,
        changes: dict[str, Any],
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(
                context, s, objective_aggregate.update_key_result(s, kr_id, changes)
            ),
        )

    def remove_key_result(
        self, context: Context, objective_id: UUID, kr_id: UUID, if_match: int | None
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(
                context, s, objective_aggregate.remove_key_result(s, kr_id)
            ),
        )

    def check_in(
        self,
        context: Context,
        objective_id: UUID,
        kr_id: UUID,
        if_match: int | None,
        fields: dict[str, Any],
    ) -> Outcome:
        return self._on_objective(
            context,
            objective_id,
            if_match,
            lambda s: self._objective_events(
                context, s, objective_aggregate.check_in(s, kr_id, fields)
            ),
        )

    def promote(
        self,
        context: Context,
        objective_id: UUID,
        kr_id: UUID,
        kpi_id: UUID,
        if_match: int | None,
        interval: str | None,
        amber: float | None,
    ) -> Outcome:
        """key_result.promoted on the objective and kpi.defined on a new KPI stream, in one
        atomic append."""

        def decide(s: Objective) -> list[events.Event]:
            on_objective, on_kpi = objective_aggregate.promote(s, kr_id, kpi_id, interval, amber)
            promoted = self._objective_events(context, s, on_objective)
            return promoted + stamp(kpi_id, 0, None, context, on_kpi)

        return self._on_objective(context, objective_id, if_match, decide)

    # -- KPIs ------------------------------------------------------------------------------

    def define_kpi(self, context: Context, kpi_id: UUID, fields: dict[str, Any]) -> Outcome:
        def run(stream: list[events.Event], expect: Callable[[int], None]) -> list[events.Event]:
            if stream:
                raise Refused(f"KPI {kpi_id} already exists")
            return stamp(kpi_id, 0, None, context, kpi_aggregate.define(fields))

        return self.execute(context, kpi_id, None, run)

    def _on_kpi(
        self,
        context: Context,
        kpi_id: UUID,
        if_match: int | None,
        decide: Callable[[Kpi], list[Any]],
    ) -> Outcome:
        def run(stream: list[events.Event], expect: Callable[[int], None]) -> list[events.Event]:
            state = kpi_aggregate.fold(stream)
            if state is None or state.org_id != context.org_id:
                raise NotFound(f"KPI {kpi_id} not found")
            expect(state.version)
            return stamp(kpi_id, state.version, state.last_hash, context, decide(state))

        return self.execute(context, kpi_id, if_match, run)

    def revise_kpi(
        self, context: Context, kpi_id: UUID, if_match: int | None, changes: dict[str, Any]
    ) -> Outcome:
        return self._on_kpi(context, kpi_id, if_match, lambda s: kpi_aggregate.revise(s, changes))

    def retire_kpi(
        self, context: Context, kpi_id: UUID, if_match: int | None, reason: str | None
    ) -> Outcome:
        return self._on_kpi(context, kpi_id, if_match, lambda s: kpi_aggregate.retire(s, reason))

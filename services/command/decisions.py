"""What every aggregate shares: refusals, the command context, and stamping new events.

A command is a pure function `(state, arguments) -> list[Pending]`: the event classes and
payloads it decides. `stamp` turns them into sealed events that continue the stream's
version numbers and hash chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import events

Pending = tuple[type[events.Event], dict[str, Any]]
"""An event the command decided, before its envelope: (class, payload)."""

IDS_NAMESPACE = UUID("0b5c3c55-6f1e-4f57-9a43-61a1b3f8a6e2")


class Refused(Exception):  # noqa: N818 (a decision, not a fault)
    """The command breaks an invariant of the aggregate's current state (HTTP 409)."""


class Invalid(Exception):  # noqa: N818
    """The command is malformed whatever the state (HTTP 422)."""


class NotFound(Exception):  # noqa: N818
    """No such resource in the caller's organisation (HTTP 404)."""


@dataclass(slots=True)
class Ids:
    """Where new resource and event ids come from.

    Random by default; derived from `seed` (organisation, Idempotency-Key and the request's
    fingerprint) when given, so a retried request produces the same ids and its earlier,
    committed outcome can be found, while another request under an expired key cannot.
    """

    seed: str | None = None
    _resources: int = 0
    _events: int = 0

    def resource(self) -> UUID:
        n, self._resources = self._resources, self._resources + 1
        return uuid.uuid4() if self.seed is None else self.derived("resource", n)

    def event(self) -> UUID:
        n, self._events = self._events, self._events + 1
        return uuid.uuid4() if self.seed is None else self.derived("event", n)

    def derived(self, kind: str, n: int) -> UUID:
        assert self.seed is not None
        return uuid.uuid5(IDS_NAMESPACE, f"{self.seed}:{kind}:{n}")

    def restart(self) -> None:
        """Hand out the same ids again (a retry after a concurrency conflict)."""
        self._resources = self._events = 0


@dataclass(slots=True)
class Context:
    """Who runs the command and when: the envelope fields of every event it produces."""

    org_id: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str = "api"
    correlation_id: UUID | None = None
    ids: Ids = field(default_factory=Ids)


def stamp(
    stream_id: UUID,
    version: int,
    last_hash: str | None,
    context: Context,
    pending: Sequence[Pending],
) -> list[events.Event]:
    """Sealed events continuing the stream after `version` (whose last hash is `last_hash`)."""
    stamped: list[events.Event] = []
    prev = last_hash
    for offset, (cls, payload) in enumerate(pending, start=1):
        event = cls.model_validate(
            {
                "event_id": context.ids.event(),
                "org_id": context.org_id,
                "stream_id": stream_id,
                "stream_version": version + offset,
                "occurred_at": context.occurred_at,
                "recorded_at": context.recorded_at,
                "actor": context.actor,
                "correlation_id": context.correlation_id,
                **payload,
            }
        )
        sealed = events.seal(event, prev)
        prev = sealed.hash
        stamped.append(sealed)
    return stamped

"""Direct readings of a KPI the projections do not know yet, held until they do.

An integration that creates a KPI over HTTP and then produces its readings straight to
okr.kpi-readings.v1 races the KPI's definition, which reaches the processor through the
event store, the relay and okr.goal-events.v1. A direct reading of an unknown KPI is
therefore not dead-lettered at once: it is stored as received (schema.HELD_TABLE) and, once
a second (`Projector`'s live generation knows the KPI), validated as of its arrival and
applied like any other: the same reading id, the arrival as its recorded_at, its
re-evaluations deferred for the next pass in the same transaction. One whose KPI is still
unknown after the grace (Settings.unknown_kpi_grace_s) goes to okr.readings-dlq.v1 with the
reason, as do all of them while the table holds HOLD_LIMIT readings (a flood of readings for
a KPI that will never exist must not grow the store without bound).

Delivery: a held reading leaves the table in the transaction that applies it; a dead one
is claimed by the worker that sends its dead letter and leaves once it is sent (at least
once, like the agent's: again only if that worker dies before)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from services.processor.projector import Projector
from services.processor.records import DeadLetter, ReadingRow, direct_reading
from services.projectionstore.schema import HELD_TABLE, iso, parse_iso

HOLD_LIMIT = 100_000  # readings held at most; beyond, an unknown KPI's go to the DLQ at once
RELEASE_ROWS = 2_000  # held readings looked at per release transaction
CLAIM = timedelta(seconds=60)  # a dead letter being sent is another worker's after this


@dataclass(frozen=True, slots=True)
class HeldReading:
    """A direct reading whose KPI was unknown when it arrived, and where it came from."""

    kpi_id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: str  # the record's value (JSON text: direct_reading parsed it)
    reason: str  # its dead letter's reason, should it never be applied


@dataclass(slots=True)
class Released:
    """What a release did: readings applied, and dead letters to send before forgetting
    them (by held id)."""

    applied: int = 0
    dead: list[tuple[int, DeadLetter]] = field(default_factory=list)


def hold(projector: Projector, held: Sequence[HeldReading]) -> list[DeadLetter]:
    """Store `held` as received now; return the dead letters of those the table has no
    room for."""
    if not held:
        return []
    with projector.transaction() as tx:
        (count,) = tx.cur.execute(f"SELECT COUNT(*) FROM {HELD_TABLE}").fetchone() or (0,)
        room = max(HOLD_LIMIT - int(count), 0)
        tx.cur.executemany(
            f"INSERT INTO {HELD_TABLE} (kpi_id, topic, part, kafka_offset, msg_key, value,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    h.kpi_id,
                    h.topic,
                    h.partition,
                    h.offset,
                    None if h.key is None else h.key.hex(),
                    h.value,
                    tx.now_text,
                )
                for h in held[:room]
            ],
        )
    return [
        DeadLetter(
            f"{h.reason} ({HOLD_LIMIT} readings of unknown KPIs are held already)"[:1000],
            h.topic,
            h.partition,
            h.offset,
            h.key,
            h.value.encode(),
        )
        for h in held[room:]
    ]


def release(projector: Projector, grace: timedelta) -> Released:
    """Apply the held readings whose KPI is known now (validated as of their arrival); the
    ones that fail validation, and those whose KPI is still unknown past `grace`, are
    returned as dead letters. A read first, which is all it takes nearly always."""
    with projector.reading() as (cur, _):
        if cur.execute(f"SELECT 1 FROM {HELD_TABLE} LIMIT 1").fetchone() is None:
            return Released()
    out = Released()
    with projector.transaction() as tx:
        kpis = tx.tables.kpis
        columns = (
            "h.id, h.kpi_id, h.topic, h.part, h.kafka_offset, h.msg_key, h.value,"
            " h.received_at, k.org_id, k.state"
        )
        free = "(h.claimed_until IS NULL OR h.claimed_until < ?)"
        # Each served by an index (kpi_id; received_at), not a walk of the table by id: a
        # flood of readings waiting out their grace costs nothing here.
        of_known = tx.cur.execute(
            f"SELECT {columns} FROM {HELD_TABLE} h JOIN {kpis} k ON k.kpi_id = h.kpi_id"
            f" WHERE h.kpi_id IN (SELECT kpi_id FROM {kpis}) AND {free} LIMIT ?",
            (tx.now_text, RELEASE_ROWS),
        ).fetchall()
        expired = tx.cur.execute(
            f"SELECT {columns} FROM {HELD_TABLE} h LEFT JOIN {kpis} k ON k.kpi_id = h.kpi_id"
            f" WHERE h.received_at < ? AND k.kpi_id IS NULL AND {free}"
            " ORDER BY h.received_at, h.id LIMIT ?",
            (iso(tx.now - grace), tx.now_text, RELEASE_ROWS),
        ).fetchall()
        rows = sorted([*of_known, *expired], key=lambda r: int(r[0]))
        applied: list[int] = []
        readings: list[ReadingRow] = []
        for held_id, kpi_id, topic, part, offset, key, value, received_at, org, state in rows:
            raw = value.encode()
            known = {} if org is None else {str(kpi_id): (str(org), str(state))}
            try:
                reading = direct_reading(raw, parse_iso(received_at), known.get)
            except ValueError as exc:
                reason = str(exc)
                if not known:
                    waited = grace.total_seconds()
                    reason += f" (its definition did not arrive within {waited:g} s)"
                letter = DeadLetter(
                    reason[:1000],
                    topic,
                    int(part),
                    int(offset),
                    None if key is None else bytes.fromhex(key),
                    raw,
                )
                out.dead.append((int(held_id), letter))
                continue
            readings.append(reading)
            applied.append(int(held_id))
        if readings:
            notices = projector.readings_notices(tx, readings)
            projector.defer_in(tx, notices, [])
            tx.cur.executemany(f"DELETE FROM {HELD_TABLE} WHERE id = ?", [(i,) for i in applied])
        # Claimed while this worker sends their dead letters: another worker's release
        # skips them (each is sent once), unless this one dies first.
        until = iso(tx.now + CLAIM)
        tx.cur.executemany(
            f"UPDATE {HELD_TABLE} SET claimed_until = ? WHERE id = ?",
            [(until, i) for i, _ in out.dead],
        )
        out.applied = len(readings)
    return out


def forget(projector: Projector, ids: Sequence[int]) -> None:
    """Take held readings off the table once their dead letters are sent."""
    if ids:
        with projector.transaction() as tx:
            tx.cur.executemany(f"DELETE FROM {HELD_TABLE} WHERE id = ?", [(i,) for i in ids])

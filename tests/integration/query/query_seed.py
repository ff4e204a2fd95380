"""Populate a projection store directly per services/projectionstore/schema.py.

The query tests do not wait for the processor: they write the rows it would write, with
numbers computed by the same projections/ functions, and real sealed events as goal_events.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson

import events
from contracts.topics import GOAL_EVENTS, KPI_READINGS, KR_MEASUREMENTS
from projections.kpi import Accumulator
from projections.periods import Period
from projections.scoring import KeyResultScore, score_objective
from services.projectionstore.db import Cursor, Database
from services.projectionstore.schema import META_DDL, META_TABLE, Tables, iso, reading_key
from services.query.views import DAY_COLUMNS, accumulator_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def create_tables(db: Database, generation: int = 1) -> Tables:
    tables = Tables(generation)
    with db.transaction() as cur:
        cur.execute(META_DDL)
        for ddl in tables.ddl(db.dialect):
            cur.execute(ddl)
        cur.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES ('generation', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(generation),),
        )
    return tables


def set_position(db: Database, tables: Tables, position: int, partitions: int) -> None:
    """Every expected watermark row at `position` (the applied position becomes it)."""
    rows = [("goal", GOAL_EVENTS.name, p, -1) for p in range(partitions)]
    rows += [("kpi", KPI_READINGS.name, p, -1) for p in range(partitions)]
    rows += [
        ("measure", KR_MEASUREMENTS.name, q, p)
        for q in range(partitions)
        for p in range(partitions)
    ]
    with db.transaction() as cur:
        cur.executemany(
            f"INSERT INTO {tables.watermarks} (stage, topic, part, source_part, position,"
            " updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (stage, topic, part, source_part)"
            " DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            [(*r, position, iso(datetime.now(UTC))) for r in rows],
        )


@dataclass
class KR:
    kind: str
    title: str
    start: float | None = None
    target: float | None = None
    weight: float = 1.0
    kpi_id: str | None = None
    aggregation: str | None = None
    current: float | None = None
    done: bool | None = None
    comparison: str | None = None
    id: str = field(default_factory=lambda: str(uuid4()))

    def scored(self) -> KeyResultScore:
        from projections.scoring import KeyResultInput, score_key_result

        return score_key_result(
            KeyResultInput(
                id=self.id, kind=self.kind, weight=self.weight, start=self.start,  # type: ignore[arg-type]
                target=self.target, comparison=self.comparison,  # type: ignore[arg-type]
                current=self.current, done=self.done,
            )
        )  # fmt: skip


class Seeder:
    """Writes objectives, KRs, KPIs, readings, history, detections and changes."""

    def __init__(self, db: Database, tables: Tables) -> None:
        self.db = db
        self.t = tables
        self.positions = itertools.count(1)
        self.versions: dict[str, int] = {}
        self.prev_hash: dict[str, str | None] = {}

    def event(
        self,
        cls: type[events.Event],
        stream: str,
        org: str,
        occurred: datetime,
        recorded: datetime | None = None,
        **payload: Any,
    ) -> int:
        """Append one sealed event to goal_events (no view rows): for as_of tests."""
        with self.db.transaction() as cur:
            return self._event(cur, cls, stream, org, occurred, recorded, **payload)

    def _event(
        self,
        cur: Cursor,
        cls: type[events.Event],
        stream: str,
        org: str,
        occurred: datetime,
        recorded: datetime | None = None,
        **payload: Any,
    ) -> int:
        version = self.versions.get(stream, 0) + 1
        event = cls.model_validate(
            {
                "event_id": uuid4(), "org_id": org, "stream_id": UUID(stream),
                "stream_version": version, "occurred_at": occurred,
                "recorded_at": recorded or occurred, "actor": "seed", **payload,
            }
        )  # fmt: skip
        sealed = events.seal(event, self.prev_hash.get(stream))
        self.versions[stream] = version
        self.prev_hash[stream] = sealed.hash
        position = next(self.positions)
        cur.execute(
            f"INSERT INTO {self.t.goal_events} (stream_id, stream_version, org_id, event_id,"
            " type, position, occurred_at, recorded_at, body) VALUES (?,?,?,?,?,?,?,?,?)",
            (stream, version, org, str(sealed.event_id), sealed.type, position,
             iso(sealed.occurred_at), iso(sealed.recorded_at), events.encode(sealed).decode()),
        )  # fmt: skip
        return position

    def objective(
        self,
        org: str,
        title: str,
        *,
        owner: str = "ana",
        level: str = "company",
        parent_id: str | None = None,
        period: tuple[date, date] = (date(2026, 1, 1), date(2026, 3, 31)),
        krs: list[KR] | None = None,
        state: str = "active",
        at: datetime = T0 + timedelta(days=45),
        description: str | None = None,
    ) -> str:
        oid = str(uuid4())
        krs = krs or []
        per = Period(*period)
        scored = [(kr.weight, kr.scored()) for kr in krs]
        s = score_objective(scored, per, at)
        with self.db.transaction() as cur:
            drafted = datetime.combine(period[0], datetime.min.time(), tzinfo=UTC)
            self._event(cur, events.ObjectiveDrafted, oid, org, drafted, title=title,
                        description=description, owner=owner, level=level, parent_id=parent_id,
                        period={"start": period[0], "end": period[1]})  # fmt: skip
            position = 0
            for ordinal, kr in enumerate(krs):
                position = self._event(
                    cur, events.KeyResultAdded, oid, org, drafted + timedelta(hours=1),
                    kr_id=kr.id, title=kr.title, kind=kr.kind, start=kr.start,
                    target=kr.target, weight=kr.weight, kpi_id=kr.kpi_id,
                    aggregation=kr.aggregation, comparison=kr.comparison,
                )  # fmt: skip
                ks = kr.scored()
                cur.execute(
                    f"INSERT INTO {self.t.key_results} (kr_id, objective_id, org_id, ordinal,"
                    " title, kind, unit, start, target, comparison, weight, kpi_id, aggregation,"
                    " current, progress, score, confidence, done, removed, updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?)",
                    (kr.id, oid, org, ordinal, kr.title, kr.kind, None, kr.start, kr.target,
                     kr.comparison, kr.weight, kr.kpi_id, kr.aggregation, ks.current,
                     ks.progress, ks.score, 0.8, None if kr.done is None else int(kr.done),
                     iso(at)),
                )  # fmt: skip
            for seq, frac in enumerate((0.25, 0.5, 1.0)):
                cur.execute(
                    f"INSERT INTO {self.t.score_history} (objective_id, seq, org_id,"
                    " occurred_at, recorded_at, event_id, event_type, score, progress,"
                    " kr_scores) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (oid, seq + 1, org, iso(drafted + timedelta(days=10 * (seq + 1))),
                     iso(drafted + timedelta(days=10 * (seq + 1))), str(uuid4()),
                     "key_result.checked_in", s.score * frac, s.progress * frac,
                     orjson.dumps({kr.id: kr.scored().score * frac for kr in krs}).decode()),
                )  # fmt: skip
            cur.execute(
                f"INSERT INTO {self.t.objectives} (objective_id, org_id, title, description,"
                " owner, level, parent_id, period_start, period_end, state, version, score,"
                " progress, rollup_score, expected, health, status, forecast, zone,"
                " policy_version, evaluated_at, created_at, updated_at, closed_at, position)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (oid, org, title, description, owner, level, parent_id, period[0].isoformat(),
                 period[1].isoformat(), state, self.versions[oid], s.score, s.progress, s.score,
                 s.expected, s.health, s.status, s.forecast, s.zone, s.policy_version, iso(at),
                 iso(drafted), iso(at), None, position),
            )  # fmt: skip
        return oid

    def kpi(
        self,
        org: str,
        name: str,
        *,
        direction: str = "increase",
        target: float = 100.0,
        amber: float = 90.0,
        interval: str = "day",
        aggregation: str = "sum",
        created: datetime = T0,
    ) -> str:
        kid = str(uuid4())
        with self.db.transaction() as cur:
            position = self._event(cur, events.KpiDefined, kid, org, created, name=name,
                                   direction=direction, target=target, amber=amber,
                                   interval=interval, aggregation=aggregation)  # fmt: skip
            cur.execute(
                f"INSERT INTO {self.t.kpis} (kpi_id, org_id, name, unit, direction, target,"
                " amber, interval, aggregation, owner, description, state, version, created_at,"
                " updated_at, last_reading_at, position) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (kid, org, name, "units", direction, target, amber, interval, aggregation, "bo",
                 None, "active", 1, iso(created), iso(created), None, position),
            )  # fmt: skip
        return kid

    def readings(
        self,
        org: str,
        kpi_id: str,
        values: list[tuple[datetime, float]],
        recorded: datetime | None = None,
    ) -> None:
        """Raw readings plus their kpi_days accumulators and the KPI's last_reading_at."""
        days: dict[str, Accumulator] = {}
        rows = []
        for observed, value in values:
            rid = str(uuid4())
            rows.append((kpi_id, rid, value, iso(observed), iso(recorded or observed),
                         reading_key(kpi_id, rid)))  # fmt: skip
            day = observed.date().isoformat()
            days[day] = days.get(day, Accumulator.empty()).add(value, observed, rid)
        with self.db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO {self.t.readings} (kpi_id, reading_id, value, observed_at,"
                " recorded_at, reading_key) VALUES (?,?,?,?,?,?)",
                rows,
            )
            for day, acc in days.items():
                existing = cur.execute(
                    f"SELECT {DAY_COLUMNS} FROM {self.t.kpi_days} WHERE kpi_id = ? AND day = ?",
                    (kpi_id, day),
                ).fetchone()
                if existing is not None:
                    acc = accumulator_of(existing).merge(acc)
                    cur.execute(
                        f"DELETE FROM {self.t.kpi_days} WHERE kpi_id = ? AND day = ?",
                        (kpi_id, day),
                    )
                cur.execute(
                    f"INSERT INTO {self.t.kpi_days} (kpi_id, day, count, total, minimum,"
                    " maximum, last_at, last_value, last_key, exact_total)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (kpi_id, day, acc.count, float(acc.exact_total), acc.minimum, acc.maximum,
                     iso(acc.last_at) if acc.last_at else None, acc.last_value, acc.last_key,
                     f"{acc.exact_total.numerator}/{acc.exact_total.denominator}"),
                )  # fmt: skip
            last = max(observed for observed, _ in values)
            cur.execute(
                f"UPDATE {self.t.kpis} SET last_reading_at = ? WHERE kpi_id = ?",
                (iso(last), kpi_id),
            )

    def detection(self, org: str, kind: str, reason: str, subject_id: str, *,
                  detected_at: datetime, resolved_at: datetime | None = None,
                  subject_type: str = "objective") -> str:  # fmt: skip
        did = str(uuid4())
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {self.t.detections} (detection_id, org_id, kind, reason,"
                " subject_type, subject_id, period, detected_at, resolved_at, policy_version,"
                " evidence) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (did, org, kind, reason, subject_type, subject_id, "2026-01-01/2026-03-31",
                 iso(detected_at), iso(resolved_at) if resolved_at else None, "v1",
                 orjson.dumps({"forecast": 0.5}).decode()),
            )  # fmt: skip
        return did

    def change(self, org: str, kind: str, subject_id: str, payload: dict[str, Any]) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {self.t.changes} (org_id, kind, subject_id, payload, at)"
                " VALUES (?,?,?,?,?)",
                (org, kind, subject_id, orjson.dumps(payload).decode(), iso(datetime.now(UTC))),
            )

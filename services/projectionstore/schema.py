"""Tables of the projection store, per generation.

Conventions: timestamps are TEXT in ISO-8601 UTC with microseconds and a `Z`
(`2026-01-01T00:00:00.000000Z`, see `iso()`), so they sort chronologically as text on both
engines; dates are TEXT `YYYY-MM-DD`; ids are TEXT (UUIDs in canonical lower-case form);
JSON is TEXT. Every table a generation owns is named `g{N}_{name}`; `projection_meta` is
shared and says which generation is live.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

PROJECTION_SCHEMA_VERSION = 8
"""Bump when the projection tables or the arithmetic change: the processor then migrates in
place where services/projectionstore/migrations.py has the step, else rebuilds."""


@functools.lru_cache(maxsize=32_768)
def iso(value: datetime) -> str:
    """The stored text form of a timestamp (UTC, microseconds, `Z`). Memoised (~3 MB at
    most): a pass writes the same instants over and over (the evaluation time, the
    objectives' and key results' timestamps), and formatting costs ~25x a cache hit.
    Equal instants give equal text whatever their offset, so equal keys agree."""
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


def parse_iso(text: str) -> datetime:
    """Inverse of `iso()` (an aware UTC datetime)."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def readings_order(dialect: str) -> str:
    """The readings table's column that grows with every reading stored (projection writers
    are serialised, so a reading committed later has a greater value): SQLite's rowid (the
    projection store is never VACUUMed, and readings are never deleted), PostgreSQL's
    `seq`."""
    return "seq" if dialect == "postgres" else "rowid"


def reading_key(kpi_id: str, reading_id: str) -> int:
    """The readings table's once-only key: a signed 64-bit hash of (kpi id, reading id).
    Its unique index is 8 bytes an entry instead of the two ids' ~75: a reading's insert
    lands on a random page of that index, and a smaller index has fewer pages to dirty.
    Two readings whose keys clash are both kept (the later one with a NULL key, see
    Projector._insert_readings), so a clash costs a lookup, never a reading."""
    digest = hashlib.blake2b(f"{kpi_id}\x1f{reading_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


META_TABLE = "projection_meta"
META_DDL = f"CREATE TABLE IF NOT EXISTS {META_TABLE} ( key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# Rows of projection_meta: ("generation", "1"), ("schema_version", "1").

HELD_TABLE = "held_readings"
"""Readings produced straight to okr.kpi-readings.v1 for a KPI the projections did not know
yet, as received (services/processor/held.py). Shared by the generations, like
projection_meta: it holds input not yet applied to any, and a replay leaves it alone."""


def held_ddl(dialect: str) -> list[str]:
    # Ids are never reused (AUTOINCREMENT): a row is deleted by the id it was read with.
    # `claimed_until`: a worker is sending the row's dead letter (held.release).
    serial = (
        "BIGSERIAL PRIMARY KEY" if dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {HELD_TABLE} ("
        f" id {serial}, kpi_id TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
        " kafka_offset BIGINT NOT NULL, msg_key TEXT, value TEXT NOT NULL,"
        " received_at TEXT NOT NULL, claimed_until TEXT)",
        f"CREATE INDEX IF NOT EXISTS {HELD_TABLE}_kpi ON {HELD_TABLE} (kpi_id)",
        f"CREATE INDEX IF NOT EXISTS {HELD_TABLE}_received ON {HELD_TABLE} (received_at)",
    ]


@dataclass(frozen=True, slots=True)
class Tables:
    """The table names of one generation."""

    generation: int

    def _t(self, name: str) -> str:
        return f"g{self.generation}_{name}"

    @property
    def objectives(self) -> str:
        return self._t("objectives")

    @property
    def key_results(self) -> str:
        return self._t("key_results")

    @property
    def checkins(self) -> str:
        return self._t("checkins")

    @property
    def goal_events(self) -> str:
        return self._t("goal_events")

    @property
    def objective_states(self) -> str:
        """Snapshots of objective states (projections.objective.from_snapshot)."""
        return self._t("objective_states")

    @property
    def kpis(self) -> str:
        return self._t("kpis")

    @property
    def readings(self) -> str:
        return self._t("readings")

    @property
    def kpi_days(self) -> str:
        return self._t("kpi_days")

    @property
    def score_history(self) -> str:
        return self._t("score_history")

    @property
    def detections(self) -> str:
        return self._t("detections")

    @property
    def owner_closures(self) -> str:
        return self._t("owner_closures")

    @property
    def watermarks(self) -> str:
        return self._t("watermarks")

    @property
    def changes(self) -> str:
        return self._t("changes")

    @property
    def outbox(self) -> str:
        """Detection events committed with the data, deleted once published to Kafka."""
        return self._t("outbox")

    @property
    def pending_notices(self) -> str:
        """Measurement notices taken by the objective agent and not re-evaluated yet: the
        latest cause per objective, for its next pass."""
        return self._t("pending_notices")

    @property
    def pending_marks(self) -> str:
        """Measurement watermarks held back until the notices taken before them are
        re-evaluated."""
        return self._t("pending_marks")

    @property
    def later_notices(self) -> str:
        """Notices of readings observed on a day after the one their pass evaluated (up to
        5 minutes in the future is accepted): the evaluation could not count them yet. The
        tick defers them again once their day has come."""
        return self._t("later_notices")

    @property
    def set_aside(self) -> str:
        """Objectives whose re-evaluation failed on its own (an evaluation bug): the notice
        that was dropped, the error and when. Re-deferred when a processor starts, since a
        fix comes with a restart; an evaluation that succeeds takes its objective off."""
        return self._t("set_aside")

    @property
    def parked_events(self) -> str:
        """Goal events of a stream whose application failed on its own (a fold or
        evaluation bug), with the error and when, and the stream's later events, which wait
        behind them: the stream's projection stays at its last good state while every other
        stream flows. Applied again, in order, when a processor starts."""
        return self._t("parked_events")

    def all(self) -> list[str]:
        """Every table of this generation."""
        return [
            self.objectives,
            self.key_results,
            self.checkins,
            self.goal_events,
            self.objective_states,
            self.kpis,
            self.readings,
            self.kpi_days,
            self.score_history,
            self.detections,
            self.owner_closures,
            self.watermarks,
            self.changes,
            self.outbox,
            self.pending_notices,
            self.pending_marks,
            self.later_notices,
            self.set_aside,
            self.parked_events,
        ]

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements of this generation (idempotent)."""
        serial = (
            "BIGSERIAL PRIMARY KEY"
            if dialect == "postgres"
            else ("INTEGER PRIMARY KEY AUTOINCREMENT")
        )
        real = "DOUBLE PRECISION"
        t = self
        return [
            # The objective view: one row per objective, current as of the last applied event.
            f"CREATE TABLE IF NOT EXISTS {t.objectives} ("
            " objective_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, title TEXT NOT NULL,"
            " description TEXT, owner TEXT NOT NULL, level TEXT NOT NULL, parent_id TEXT,"
            " period_start TEXT NOT NULL, period_end TEXT NOT NULL,"
            " state TEXT NOT NULL,"  # active | closed | archived
            " version BIGINT NOT NULL,"  # stream_version of the last applied event
            f" score {real} NOT NULL, progress {real} NOT NULL, rollup_score {real} NOT NULL,"
            f" expected {real} NOT NULL, health {real}, status TEXT NOT NULL, forecast {real},"
            " zone TEXT NOT NULL, policy_version TEXT NOT NULL, evaluated_at TEXT NOT NULL,"
            " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, closed_at TEXT,"
            " position BIGINT NOT NULL)",  # global position of the last applied event
            f"CREATE INDEX IF NOT EXISTS {t.objectives}_org ON {t.objectives}"
            " (org_id, objective_id)",
            f"CREATE INDEX IF NOT EXISTS {t.objectives}_parent ON {t.objectives} (parent_id)",
            # Key results (removed ones stay, flagged, for history).
            f"CREATE TABLE IF NOT EXISTS {t.key_results} ("
            " kr_id TEXT PRIMARY KEY, objective_id TEXT NOT NULL, org_id TEXT NOT NULL,"
            " ordinal INTEGER NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL, unit TEXT,"
            f" start {real}, target {real}, comparison TEXT, weight {real} NOT NULL,"
            f" kpi_id TEXT, aggregation TEXT, current {real}, progress {real} NOT NULL,"
            f" score {real} NOT NULL, confidence {real}, done INTEGER,"
            " removed INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t.key_results}_obj ON {t.key_results} (objective_id)",
            f"CREATE INDEX IF NOT EXISTS {t.key_results}_kpi ON {t.key_results} (kpi_id)",
            f"CREATE TABLE IF NOT EXISTS {t.checkins} ("
            " event_id TEXT PRIMARY KEY, objective_id TEXT NOT NULL, kr_id TEXT NOT NULL,"
            f" value {real}, done INTEGER, confidence {real}, note TEXT,"
            " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t.checkins}_kr ON {t.checkins} (kr_id, occurred_at)",
            # Raw goal events (objective and KPI streams) with envelope and hash chain: the
            # source of /events, history and as_of/known_at folds.
            f"CREATE TABLE IF NOT EXISTS {t.goal_events} ("
            " stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL, org_id TEXT NOT NULL,"
            " event_id TEXT NOT NULL, type TEXT NOT NULL, position BIGINT,"
            " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL,"
            " body TEXT NOT NULL,"  # the event's canonical JSON
            " PRIMARY KEY (stream_id, stream_version))",
            # The state after each objective's last applied event, as JSON: loading it costs
            # one read and a parse, where folding the stream's events costs each event's
            # decoding (and grows with its history). A missing or unreadable snapshot only
            # means the stream is folded.
            f"CREATE TABLE IF NOT EXISTS {t.objective_states} ("
            " objective_id TEXT PRIMARY KEY, version BIGINT NOT NULL, format INTEGER NOT NULL,"
            " snapshot TEXT NOT NULL)",
            # KPI view.
            f"CREATE TABLE IF NOT EXISTS {t.kpis} ("
            " kpi_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, unit TEXT,"
            f" direction TEXT NOT NULL, target {real} NOT NULL, amber {real} NOT NULL,"
            " interval TEXT NOT NULL, aggregation TEXT NOT NULL, owner TEXT, description TEXT,"
            " state TEXT NOT NULL,"  # active | retired
            " version BIGINT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
            " last_reading_at TEXT, position BIGINT NOT NULL,"
            # Bumped whenever the KPI's kpi_days change: lets a processor keep parsed days
            # in memory and re-read them only when they changed (not content, see digest).
            " days_version BIGINT NOT NULL DEFAULT 0)",
            f"CREATE INDEX IF NOT EXISTS {t.kpis}_org ON {t.kpis} (org_id, kpi_id)",
            # Raw readings (for as_of / known_at and KR aggregation over a period): what the
            # reads use, no more (the event store keeps each reading's event). Indexed by
            # (kpi_id, observed_at) for the as_of reads, and by the once-only reading_key
            # (schema.reading_key); a reading whose key clashes with another's is stored with
            # a NULL key and found through the small partial index.
            # Stored in arrival order (readings_order: SQLite's rowid, PostgreSQL's `seq`;
            # NULL for the readings a v4 store held), so a replay finds what was stored after
            # a point cheaply.
            f"CREATE TABLE IF NOT EXISTS {t.readings} ("
            f" kpi_id TEXT NOT NULL, reading_id TEXT NOT NULL, value {real} NOT NULL,"
            " observed_at TEXT NOT NULL, recorded_at TEXT NOT NULL, reading_key BIGINT"
            + (", seq BIGSERIAL)" if dialect == "postgres" else ")"),
            *(
                [
                    f"CREATE INDEX IF NOT EXISTS {t.readings}_seq ON {t.readings} (seq)"
                    " WHERE seq IS NOT NULL"
                ]
                if dialect == "postgres"
                else []
            ),
            f"CREATE INDEX IF NOT EXISTS {t.readings}_kpi ON {t.readings} (kpi_id, observed_at)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {t.readings}_key ON {t.readings} (reading_key)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {t.readings}_clash ON {t.readings}"
            " (kpi_id, reading_id) WHERE reading_key IS NULL",
            # Daily accumulators per KPI (projections.kpi.Accumulator); week/month buckets and
            # period aggregates are merges of days.
            f"CREATE TABLE IF NOT EXISTS {t.kpi_days} ("
            " kpi_id TEXT NOT NULL, day TEXT NOT NULL, count BIGINT NOT NULL,"
            f" total {real} NOT NULL, minimum {real}, maximum {real}, last_at TEXT,"
            f" last_value {real}, last_key TEXT,"
            # The exact rational sum "num/den" (Accumulator.exact_total): sums and averages
            # stay independent of the order readings arrive in; `total` is its float.
            " exact_total TEXT NOT NULL DEFAULT '0',"
            # The latest recorded_at of the day's readings: a closed objective counts the
            # readings known at its close, and only a day recorded into since is re-read.
            " last_recorded TEXT, PRIMARY KEY (kpi_id, day))",
            # One row per change of an objective's score, with the causing event.
            f"CREATE TABLE IF NOT EXISTS {t.score_history} ("
            " objective_id TEXT NOT NULL, seq BIGINT NOT NULL, org_id TEXT NOT NULL,"
            " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, event_id TEXT NOT NULL,"
            f" event_type TEXT NOT NULL, score {real} NOT NULL, progress {real} NOT NULL,"
            " kr_scores TEXT NOT NULL,"  # JSON {kr_id: score}
            " PRIMARY KEY (objective_id, seq))",
            f"CREATE TABLE IF NOT EXISTS {t.detections} ("
            " detection_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, kind TEXT NOT NULL,"
            " reason TEXT NOT NULL, subject_type TEXT NOT NULL, subject_id TEXT NOT NULL,"
            " period TEXT NOT NULL, detected_at TEXT NOT NULL, resolved_at TEXT,"
            " policy_version TEXT NOT NULL, evidence TEXT NOT NULL,"
            # stream_version of the last detection.raised/resolved event of this detection.
            " version BIGINT NOT NULL DEFAULT 0,"
            " UNIQUE (org_id, kind, reason, subject_type, subject_id, period))",
            f"CREATE INDEX IF NOT EXISTS {t.detections}_org ON {t.detections}"
            " (org_id, detected_at)",
            # The processor re-checks the detections of the subjects it recomputes.
            f"CREATE INDEX IF NOT EXISTS {t.detections}_subject ON {t.detections}"
            " (subject_id, subject_type)",
            # Closed objectives per owner, in close order (chronic detections).
            f"CREATE TABLE IF NOT EXISTS {t.owner_closures} ("
            " org_id TEXT NOT NULL, owner TEXT NOT NULL, objective_id TEXT NOT NULL,"
            f" closed_at TEXT NOT NULL, score {real} NOT NULL,"
            " PRIMARY KEY (org_id, owner, objective_id))",
            f"CREATE INDEX IF NOT EXISTS {t.owner_closures}_obj ON {t.owner_closures}"
            " (objective_id)",
            # Read-your-writes: per (stage, topic, partition, source_partition) the event-store
            # position below which everything is applied. applied position = min over rows.
            f"CREATE TABLE IF NOT EXISTS {t.watermarks} ("
            " stage TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
            " source_part INTEGER NOT NULL, position BIGINT NOT NULL, updated_at TEXT NOT NULL,"
            " PRIMARY KEY (stage, topic, part, source_part))",
            # Change feed for SSE: appended in the same transaction as the data.
            f"CREATE TABLE IF NOT EXISTS {t.changes} ("
            f" seq {serial}, org_id TEXT NOT NULL, kind TEXT NOT NULL,"
            " subject_id TEXT NOT NULL, payload TEXT NOT NULL, at TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t.outbox} ("
            f" seq {serial}, topic TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL)",
            # Deferred re-evaluations (Projector.defer_in): `seq` numbers the takes, and a
            # notice keeps the seq of the take that first deferred it (a later notice only
            # updates the cause), so a watermark is released once every notice of its take
            # and the earlier ones has been re-evaluated.
            f"CREATE TABLE IF NOT EXISTS {t.pending_notices} ("
            " objective_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, occurred_at TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL, seq BIGINT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t.pending_notices}_seq ON {t.pending_notices}"
            " (seq, objective_id)",
            f"CREATE TABLE IF NOT EXISTS {t.pending_marks} ("
            " stage TEXT NOT NULL, topic TEXT NOT NULL, part INTEGER NOT NULL,"
            " source_part INTEGER NOT NULL, position BIGINT NOT NULL, seq BIGINT NOT NULL)",
            # Not a watermark's business: the reading is applied, and the evaluation was
            # right for its time (Tables.later_notices).
            f"CREATE TABLE IF NOT EXISTS {t.later_notices} ("
            " objective_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, occurred_at TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t.set_aside} ("
            " objective_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, occurred_at TEXT NOT NULL,"
            " recorded_at TEXT NOT NULL, error TEXT NOT NULL, set_aside_at TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t.parked_events} ("
            " stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL, position BIGINT,"
            " body TEXT NOT NULL, error TEXT NOT NULL, parked_at TEXT NOT NULL,"
            " PRIMARY KEY (stream_id, stream_version))",
        ]

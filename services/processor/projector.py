"""Batch application of readings, goal events and measurement notices to the projection
store: the processor's whole effect, independent of Kafka (the live agents and the replay
call the same methods).

Every call is one transaction that first takes the projection writers' lock, so it sees
the live generation and never interleaves with another writer (another worker, the
replay's swap). Everything is idempotent: readings count once per (kpi, reading id), goal
events once per (stream, version), detections once per key, so a redelivered batch
changes nothing.
"""

from __future__ import annotations

import logging
import time
import traceback
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import orjson

import events
from contracts.readings import dashed, url_uuid5_hex
from contracts.topics import DETECTIONS
from projections import detections as rules
from projections.history import score_changed
from projections.kpi import Accumulator, bucket_end, bucket_start, parse_total, total_text
from projections.objective import (
    SNAPSHOT_FORMAT,
    Measurement,
    NotThisObjectiveError,
    ObjectiveState,
    Series,
    apply,
    evaluate,
    fold,
    from_snapshot,
    key_result_input,
    latest_confidence,
    latest_done,
    measure,
    target_at,
)
from projections.periods import Period
from projections.policy import DEFAULT_POLICY, ScoringPolicy
from projections.scoring import (
    MAX_ROLLUP_LEVELS,
    KeyResultScore,
    ObjectiveScore,
    rollup_score,
    score_objective,
)
from services.processor.records import (
    GoalItem,
    KpiNotice,
    Notice,
    ReadingRow,
    Watermark,
    keep_latest,
)
from services.processor.statecache import StateCache
from services.projectionstore.db import Cursor, Database, DatabaseUnavailableError
from services.projectionstore.meta import (
    links_key,
    live_generation,
    read_meta,
    write_lock,
    write_meta,
)
from services.projectionstore.readings import insert_readings
from services.projectionstore.schema import Tables, iso, parse_iso

log = logging.getLogger(__name__)

CHUNK = 400  # rows per IN (...) list: well under SQLite's bound-parameter limit

OBJECTIVE_RULES = {
    ("over_reach", "forecast"),
    ("over_reach", "final"),
    ("under_reach", "achieved_early"),
    ("under_reach", "final"),
}
KR_RULES = {("under_reach", "target_already_met")}
OWNER_RULES = {("over_reach", "chronic"), ("under_reach", "chronic")}
KPI_RULES = {("kpi_breach", "red"), ("stale_kpi", "no_data")}
KR_COLUMNS = (
    "kr_id, objective_id, org_id, ordinal, title, kind, unit, start, target, comparison,"
    " weight, kpi_id, aggregation, current, progress, score, confidence, done, removed,"
    " updated_at"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# A cached objective state gives way to a new one only after going unused this long: longer
# than a pass over every objective takes (~2 min for 100k on two cores), so passes over more
# objectives than the cache holds keep hitting the ones it holds (statecache.py).
CACHE_IDLE_S = 600.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before any reading
# What the last evaluations read (Seen), kept for up to this many objectives: ~100 bytes
# each, the inputs and evaluation times shared.
SEEN_SIZE = 1_000_000
# Subjects (active objectives, then KPIs) per transaction of the time-driven tick: its
# memory and its hold on the writer stay bounded however many objectives there are (one
# transaction over 100k objectives held ~170 MB of rows and findings at once).
TICK_CHUNK = 2_000
TICK_START = ("objective", "")  # where a tick's first step starts: (subject type, after id)


ONE_DAY = timedelta(days=1)


def _keep_notices(tx: Tx, table: str, notices: Sequence[Notice], seq: int | None = None) -> None:
    """Upsert notices into a table of them keyed by objective, keeping the latest cause
    (stored-text timestamps sort like the instants: keep_latest's order, in SQL) and the
    first `seq` when the table has one."""
    if not notices:
        return
    columns = "objective_id, event_id, occurred_at, recorded_at" + ("" if seq is None else ", seq")
    rows = [(n.objective_id, n.event_id, iso(n.occurred_at), iso(n.recorded_at)) for n in notices]
    tx.cur.executemany(
        f"INSERT INTO {table} ({columns}) VALUES ({_marks(4 if seq is None else 5)})"
        " ON CONFLICT (objective_id) DO UPDATE SET event_id = excluded.event_id,"
        " occurred_at = excluded.occurred_at, recorded_at = excluded.recorded_at"
        f" WHERE (excluded.occurred_at, excluded.event_id) > ({table}.occurred_at,"
        f" {table}.event_id)",
        rows if seq is None else [(*r, seq) for r in rows],
    )


def _notices(rows: Iterable[Sequence[Any]]) -> list[Notice]:
    """Stored notices (objective_id, event_id, occurred_at, recorded_at) as Notices."""
    return [Notice(o, e, parse_iso(at), parse_iso(rec)) for o, e, at, rec in rows]


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


@contextmanager
def _savepoint(tx: Tx, name: str) -> Iterator[None]:
    """Run the block under a savepoint of `tx`: an error rolls back what it wrote, and what
    it buffered for the commit (change feed, published detections), then propagates."""
    changes, published = len(tx.changes), len(tx.published)
    tx.cur.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        tx.cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
        tx.cur.execute(f"RELEASE SAVEPOINT {name}")
        del tx.changes[changes:]
        del tx.published[published:]
        raise
    tx.cur.execute(f"RELEASE SAVEPOINT {name}")


def _subject_id(subject: Any) -> str:
    """The id of a tick subject: an objective row's first column, or a KpiRow's kpi_id."""
    return str(subject.kpi_id) if isinstance(subject, KpiRow) else str(subject[0])


def _opt_iso(t: datetime | None) -> str | None:
    return None if t is None else iso(t)


def _inputs(state: ObjectiveState, kpis: dict[str, KpiRow]) -> Inputs:
    """The days versions of the KPIs that `state`'s key results measure, in `kpis`."""
    found = {kr.kpi_id for kr in state.key_results if kr.kpi_id is not None}
    return tuple((k, kpis[k].days_version if k in kpis else -1) for k in sorted(found))


def _accumulator(row: Sequence[Any]) -> Accumulator:
    """kpi_days columns (count, exact_total, minimum, maximum, last_at, last_value, last_key)."""
    count, exact, minimum, maximum, last_at, last_value, last_key = row
    return Accumulator(
        count=int(count),
        scaled_total=parse_total(str(exact)),
        minimum=minimum,
        maximum=maximum,
        last_at=None if last_at is None else parse_iso(last_at),
        last_value=last_value,
        last_key=last_key,
    )


def _day_of(rows: Sequence[ReadingRow]) -> Accumulator:
    """The accumulator of one KPI-day's new readings (stored-text timestamps sort like the
    instants, so the latest is found without parsing each one)."""
    last_at, last_key, last_value = max((r.observed_at, r.reading_id, r.value + 0.0) for r in rows)
    return Accumulator.of_values([r.value for r in rows], parse_iso(last_at), last_key, last_value)


@dataclass(slots=True)
class KpiRow:
    kpi_id: str
    org_id: str
    direction: str
    target: float
    amber: float
    interval: str
    aggregation: str
    state: str
    created_at: datetime
    last_reading_at: datetime | None
    days_version: int = 0


# The days_version of each KPI an objective's key results measure, as its evaluation read
# them: (kpi_id, days_version) sorted; -1 for a KPI not defined (yet).
Inputs = tuple[tuple[str, int], ...]
Links = tuple[tuple[str, str, tuple[str, ...]], ...]
"""A KPI's measuring objectives: (first day, last day, objective ids) per span of days."""


class Seen(NamedTuple):
    """What an objective's last committed evaluation by this worker read: the state's
    version, the measured KPIs' days versions, and the evaluation time."""

    version: int
    inputs: Inputs
    at: datetime


@dataclass(slots=True)
class Tx:
    """One projection write transaction: the cursor, the live tables, the evaluation time,
    and what to do once it commits."""

    cur: Cursor
    tables: Tables
    now: datetime
    cached: dict[str, ObjectiveState] = field(default_factory=dict)
    # objective_id -> (inputs, evaluation time) of the evaluations in this transaction.
    inputs: dict[str, tuple[Inputs, datetime]] = field(default_factory=dict)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    # kpi_id -> (days_version, {day: accumulator}): the KPI's complete kpi_days as this
    # transaction saw or wrote them, for the projector's day cache once it commits.
    days: dict[str, tuple[int, dict[date, Accumulator]]] = field(default_factory=dict)
    changes: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    readings_stored: int = 0  # readings this transaction stored (others were stored before)
    # (kpi_id, aggregation, interval, period) -> (days_version, Series) built here.
    series: dict[tuple[Any, ...], tuple[int, Series]] = field(default_factory=dict)
    now_text: str = ""

    def __post_init__(self) -> None:
        self.now_text = iso(self.now)


class Projector:
    """Applies batches to the projection store (see the module docstring).

    `generation`: None = the live generation (re-read in every transaction); a number =
    always that generation's tables (the replay's build). `publish`: whether detection
    events go to the outbox for okr.detections.v1.
    """

    def __init__(
        self,
        db: Database,
        *,
        policy: ScoringPolicy = DEFAULT_POLICY,
        clock: Callable[[], datetime] = utcnow,
        generation: int | None = None,
        lock: bool = True,
        publish: bool = True,
        cache_size: int = 10_000,
        days_cache_size: int = 200_000,
    ) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock
        self.generation = generation
        self.lock = lock
        self.publish = publish
        self._cache: StateCache[ObjectiveState] = StateCache(cache_size, CACHE_IDLE_S)
        # objective_id -> what its last evaluation here read, for every objective evaluated
        # (not only the cached states): a notice it already counted is skipped before any
        # state is loaded.
        self._seen: dict[str, Seen] = {}
        self._cache_generation: int | None = None
        # Parsed kpi_days per KPI, valid while the stored days_version matches; bounded by
        # the number of day accumulators held.
        self.days_cache_size = days_cache_size
        self._days_cache: dict[str, tuple[int, dict[date, Accumulator]]] = {}
        self._days_held = 0
        # Prepared Series by (kpi, aggregation, interval, period), with the days_version
        # they were built from.
        self.series_cache_size = 1_000
        self._series_cache: dict[tuple[Any, ...], tuple[int, Series]] = {}
        # kpi_id -> the objectives whose key results measure it, by span of days (_linked),
        # valid while projection_meta's links_key holds `_links_token`.
        self._links: dict[str, Links] = {}
        self._links_token: str | None = None

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction on the live (or fixed) generation; the objective cache is
        updated only once it commits."""
        with self.db.transaction() as cur:
            if self.lock:
                write_lock(cur)
            generation = self.generation if self.generation is not None else live_generation(cur)
            if generation != self._cache_generation:
                self._cache.clear()
                self._seen.clear()
                self._days_cache.clear()
                self._days_held = 0
                self._series_cache.clear()
                self._links.clear()
                self._cache_generation = generation
            tx = Tx(cur, Tables(generation), self.clock())
            yield tx
            self.flush(tx)
        self._cache.put_all(tx.cached.items(), time.monotonic())
        self._keep_seen(tx)
        self._keep_days(tx.days)
        self._keep_series(tx.series)

    @contextmanager
    def reading(self) -> Iterator[tuple[Cursor, Tables]]:
        """A read transaction on the live (or fixed) generation: it waits for no writer."""
        with self.db.transaction(write=False) as cur:
            generation = self.generation if self.generation is not None else live_generation(cur)
            yield cur, Tables(generation)

    def _keep_seen(self, tx: Tx) -> None:
        shared: dict[Inputs, Inputs] = {}  # one tuple for the objectives that read the same
        seen = self._seen
        for oid, state in tx.cached.items():
            inputs, at = tx.inputs[oid]
            seen.pop(oid, None)  # re-inserted last: the oldest entries go first
            seen[oid] = Seen(state.version, shared.setdefault(inputs, inputs), at)
        while len(seen) > SEEN_SIZE:
            del seen[next(iter(seen))]

    def _keep_days(self, found: dict[str, tuple[int, dict[date, Accumulator]]]) -> None:
        for kpi_id, entry in found.items():
            old = self._days_cache.pop(kpi_id, None)
            if old is not None:
                self._days_held -= len(old[1])
            self._days_cache[kpi_id] = entry
            self._days_held += len(entry[1])
        while self._days_held > self.days_cache_size and self._days_cache:
            _, dropped = self._days_cache.pop(next(iter(self._days_cache)))
            self._days_held -= len(dropped)

    def _cached_days(self, tx: Tx, kpi_id: str, version: int) -> dict[date, Accumulator] | None:
        """The KPI's days at `version` as this transaction or a committed one saw them."""
        entry = tx.days.get(kpi_id) or self._days_cache.get(kpi_id)
        return entry[1] if entry is not None and entry[0] == version else None

    def on_cursor(self, cur: Cursor) -> Tx:
        """A Tx over a transaction the caller holds (the replay's locked catch-up); needs a
        fixed generation."""
        assert self.generation is not None
        return Tx(cur, Tables(self.generation), self.clock())

    def write_watermarks(self, tx: Tx, marks: Iterable[Watermark]) -> None:
        """Record the watermarks: a higher position moves a row's position, and one as high
        as the stored one confirms it (updated_at: the relay repeats its watermark about once
        a second while the log stands still, so an idle processor's rows stay fresh and only
        a stalled relay or processor lets them age)."""
        best: dict[tuple[str, str, int, int], int] = {}
        for m in marks:
            key = (m.stage, m.topic, m.part, m.source_part)
            best[key] = max(best.get(key, m.position), m.position)
        t = tx.tables.watermarks
        tx.cur.executemany(
            f"INSERT INTO {t} (stage, topic, part, source_part, position, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stage, topic, part, source_part)"
            " DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
            f" WHERE excluded.position >= {t}.position",
            [(*k, p, iso(tx.now)) for k, p in sorted(best.items())],
        )

    # -- readings ------------------------------------------------------------------------

    def apply_readings(
        self, rows: Sequence[ReadingRow], marks: Sequence[Watermark] = ()
    ) -> list[Notice]:
        """Store readings once each, fold the new ones into kpi_days, update the KPIs and
        their detections; return one notice per objective whose key results measure a
        KPI of the batch (also for already-stored readings, so a redelivery after a crash
        re-sends the notices that may have been lost)."""
        with self.transaction() as tx:
            notices = self.readings_notices(tx, rows)
            self.write_watermarks(tx, marks)
        return notices

    def readings_notices(
        self, tx: Tx, rows: Sequence[ReadingRow], *, stored_notify: bool = True
    ) -> list[Notice]:
        """readings_in, then objectives_measuring: one notice per objective its readings
        feed, resolved to the objectives linked now."""
        return self.objectives_measuring(
            tx, self.readings_in(tx, rows, stored_notify=stored_notify)
        )

    def readings_in(
        self, tx: Tx, rows: Sequence[ReadingRow], *, stored_notify: bool = True
    ) -> list[KpiNotice]:
        """Store and fold the readings not stored yet; return the KPI notices of the batch.
        With `stored_notify` (the agents) readings stored before cause notices too (a
        redelivery re-sends the notices a crash may have lost); without, only new ones."""
        if not rows:
            return []
        new = self._insert_readings(tx, rows)
        tx.readings_stored += len(new)
        written = self._fold_days(tx, new)
        latest: dict[str, ReadingRow] = {}
        for r in new:
            seen = latest.get(r.kpi_id)
            if seen is None or (r.observed_at, r.event_id) > (seen.observed_at, seen.event_id):
                latest[r.kpi_id] = r
        t = tx.tables
        tx.cur.executemany(
            f"UPDATE {t.kpis} SET days_version = days_version + 1, last_reading_at = CASE"
            " WHEN last_reading_at IS NULL OR last_reading_at < ? THEN ? ELSE last_reading_at"
            " END WHERE kpi_id = ?",
            [(r.observed_at, r.observed_at, k) for k, r in sorted(latest.items())],
        )
        kpis = self._kpis(tx, sorted(latest))
        # Keep the day cache warm: days at the version before this batch's bump, patched.
        by_kpi: dict[str, dict[date, Accumulator]] = defaultdict(dict)
        for (kpi_id, day), acc in written.items():
            by_kpi[kpi_id][date.fromisoformat(day)] = acc
        for kpi_id, changed in by_kpi.items():
            kpi = kpis.get(kpi_id)
            if kpi is None:
                continue
            before = self._cached_days(tx, kpi_id, kpi.days_version - 1)
            if before is not None:
                tx.days[kpi_id] = (kpi.days_version, {**before, **changed})
        for kpi_id in sorted(latest):
            kpi = kpis.get(kpi_id)
            if kpi is not None:
                payload = {"kpi_id": kpi_id, "last_reading_at": _opt_iso(kpi.last_reading_at)}
                self._change(tx, kpi.org_id, "kpi.updated", kpi_id, payload)
        self.sync_kpi_detections(tx, list(kpis.values()))
        # The readings that cause notices: the batch's latest per KPI and observed day
        # (see `stored_notify`). Stored-text timestamps sort like the instants and begin
        # with the day.
        cause: dict[tuple[str, str], ReadingRow] = {}
        for r in rows if stored_notify else new:
            key = (r.kpi_id, r.observed_at[:10])
            seen = cause.get(key)
            if seen is None or (r.observed_at, r.event_id) > (seen.observed_at, seen.event_id):
                cause[key] = r
        return [
            KpiNotice(kpi_id, r.event_id, parse_iso(r.observed_at), parse_iso(r.recorded_at), day)
            for (kpi_id, day), r in sorted(cause.items())
        ]

    def objectives_measuring(self, tx: Tx, kpi_notices: Sequence[KpiNotice]) -> list[Notice]:
        """One notice per objective whose key results measure a KPI of `kpi_notices` (as
        linked now) on a day it measures, caused by the latest such notice; by objective id.
        An objective measures the days of its period up to its evaluation time: a closed
        one, up to the day it closed (Projector.evaluation_time). Days outside those cannot
        change its scores, so it is left alone: past quarters linked to a KPI cost nothing
        when today's readings come in, nor do objectives closed before the readings' days."""
        by_kpi: dict[str, dict[str, KpiNotice]] = defaultdict(dict)
        for k in kpi_notices:
            keep_latest(by_kpi[k.kpi_id], k.day, k)
        # objective id -> (rank, notice): keep_latest's order, inlined (a kpi batch feeds
        # every objective measuring its KPIs).
        chosen: dict[str, tuple[tuple[datetime, str], KpiNotice]] = {}
        links = self._linked(tx, sorted(by_kpi))
        for kpi_id, found in by_kpi.items():
            # The KPI's notices by day, in order: the latest inside a span of days is the
            # one of the last day up to its end, when that day is not before its start.
            kpi_days = sorted(found)
            for start, end, objective_ids in links[kpi_id]:
                i = bisect_right(kpi_days, end) - 1
                if i < 0 or kpi_days[i] < start:
                    continue
                k = found[kpi_days[i]]
                entry = ((k.occurred_at, k.event_id), k)
                for oid in objective_ids:
                    held = chosen.get(oid)
                    if held is None or entry[0] > held[0]:
                        chosen[oid] = entry
        notices: list[Notice] = []
        for oid in sorted(chosen):  # the ids alone: sorting the entries compares tuples
            _, k = chosen[oid]
            notices.append(Notice(oid, k.event_id, k.occurred_at, k.recorded_at))
        return notices

    def _linked(self, tx: Tx, kpi_ids: Sequence[str]) -> dict[str, Links]:
        """The objectives whose key results measure each of these KPIs, as linked now, by
        the span of days they measure (first day, last day, objective ids): from the map
        kept across transactions while no goal event was applied to an objective since
        (links_key), else read for the KPIs missing. The days are the objective's period,
        up to the day it closed for one evaluated at its close (evaluation_time: no longer
        active, with a close time). Objectives share a few spans (their quarters), so a
        KPI's notices are matched once per span rather than once per objective."""
        token = read_meta(tx.cur, links_key(tx.tables))
        if token != self._links_token:
            self._links.clear()
            self._links_token = token
        missing = [k for k in kpi_ids if k not in self._links]
        found: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(lambda: defaultdict(set))
        t = tx.tables
        for chunk in _chunks(missing):
            for objective_id, kpi_id, start, end, state, closed_at in tx.cur.execute(
                f"SELECT k.objective_id, k.kpi_id, o.period_start, o.period_end, o.state,"
                f" o.closed_at FROM {t.key_results} k JOIN {t.objectives} o"
                f" ON o.objective_id = k.objective_id"
                f" WHERE k.removed = 0 AND k.kpi_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                if state != "active" and closed_at is not None:
                    end = min(end, closed_at[:10])  # stored text: the UTC day comes first
                found[kpi_id][(start, end)].add(objective_id)
        for kpi_id in missing:
            spans = found.get(kpi_id, {})
            self._links[kpi_id] = tuple(
                (start, end, tuple(sorted(spans[start, end]))) for start, end in sorted(spans)
            )
        return self._links

    def _insert_readings(self, tx: Tx, rows: Sequence[ReadingRow]) -> list[ReadingRow]:
        """Insert the readings not stored yet (once per (kpi, reading id)); return those."""
        unique: dict[tuple[str, str], ReadingRow] = {}
        for r in rows:
            unique.setdefault((r.kpi_id, r.reading_id), r)
        kept = list(unique.values())
        new = insert_readings(
            tx.cur,
            tx.tables.readings,
            [(r.kpi_id, r.reading_id, r.value, r.observed_at, r.recorded_at) for r in kept],
        )
        return [kept[i] for i in new]

    def _fold_days(self, tx: Tx, new: Sequence[ReadingRow]) -> dict[tuple[str, str], Accumulator]:
        """Fold new readings into kpi_days; return the written days (kpi_id, day) -> acc."""
        groups: dict[tuple[str, str], list[ReadingRow]] = defaultdict(list)
        for r in new:
            groups[(r.kpi_id, r.observed_at[:10])].append(r)
        adds = {key: _day_of(rs) for key, rs in groups.items()}
        recorded = {key: max(r.recorded_at for r in rs) for key, rs in groups.items()}
        keys = sorted(adds)
        t = tx.tables.kpi_days
        # (kpi_id, day) IN (VALUES ...) would scan the whole table in SQLite: read each
        # KPI's range of the batch's days through the primary key instead.
        first, last = (
            min(k[1] for k in keys) if keys else "",
            max(k[1] for k in keys) if keys else "",
        )
        for chunk in _chunks(sorted({k[0] for k in keys})):
            for row in tx.cur.execute(
                f"SELECT kpi_id, day, count, exact_total, minimum, maximum, last_at, last_value,"
                f" last_key, last_recorded FROM {t} WHERE kpi_id IN ({_marks(len(chunk))})"
                " AND day >= ? AND day <= ?",
                [*chunk, first, last],
            ).fetchall():
                key = (row[0], row[1])
                if key in adds:
                    adds[key] = _accumulator(row[2:9]).merge(adds[key])
                    if row[9] is not None and row[9] > recorded[key]:
                        recorded[key] = row[9]
        tx.cur.executemany(
            f"INSERT INTO {t} (kpi_id, day, count, total, minimum, maximum, last_at, last_value,"
            " last_key, exact_total, last_recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kpi_id, day) DO UPDATE SET count = excluded.count,"
            " total = excluded.total, minimum = excluded.minimum, maximum = excluded.maximum,"
            " last_at = excluded.last_at, last_value = excluded.last_value,"
            " last_key = excluded.last_key, exact_total = excluded.exact_total,"
            " last_recorded = excluded.last_recorded",
            [
                (
                    k[0],
                    k[1],
                    a.count,
                    a.total,
                    a.minimum,
                    a.maximum,
                    _opt_iso(a.last_at),
                    a.last_value,
                    a.last_key,
                    total_text(a.scaled_total),
                    recorded[k],
                )
                for k in keys
                for a in (adds[k],)
            ],
        )
        return adds

    def _kpis(self, tx: Tx, kpi_ids: Sequence[str]) -> dict[str, KpiRow]:
        found: dict[str, KpiRow] = {}
        for chunk in _chunks(list(kpi_ids)):
            for row in tx.cur.execute(
                "SELECT kpi_id, org_id, direction, target, amber, interval, aggregation, state,"
                f" created_at, last_reading_at, days_version FROM {tx.tables.kpis}"
                f" WHERE kpi_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                found[row[0]] = KpiRow(
                    kpi_id=row[0],
                    org_id=row[1],
                    direction=row[2],
                    target=row[3],
                    amber=row[4],
                    interval=row[5],
                    aggregation=row[6],
                    state=row[7],
                    created_at=parse_iso(row[8]),
                    last_reading_at=None if row[9] is None else parse_iso(row[9]),
                    days_version=int(row[10]),
                )
        return found

    def _days(
        self, tx: Tx, kpi_ids: Sequence[str], first: date, last: date
    ) -> dict[str, list[tuple[date, Accumulator]]]:
        found: dict[str, list[tuple[date, Accumulator]]] = defaultdict(list)
        for chunk in _chunks(sorted(set(kpi_ids))):
            for row in tx.cur.execute(
                "SELECT kpi_id, day, count, exact_total, minimum, maximum, last_at, last_value,"
                f" last_key FROM {tx.tables.kpi_days} WHERE kpi_id IN ({_marks(len(chunk))})"
                " AND day >= ? AND day <= ? ORDER BY kpi_id, day",
                [*chunk, first.isoformat(), last.isoformat()],
            ).fetchall():
                found[row[0]].append((date.fromisoformat(row[1]), _accumulator(row[2:])))
        return found

    def _all_days(
        self, tx: Tx, kpi_ids: Sequence[str], kpis: dict[str, KpiRow]
    ) -> dict[str, dict[date, Accumulator]]:
        """Every kpi_days row of these KPIs, from the day cache when its days_version still
        matches, else read (and kept for the cache once the transaction commits)."""
        found: dict[str, dict[date, Accumulator]] = {}
        missing: list[str] = []
        for kpi_id in kpi_ids:
            kpi = kpis.get(kpi_id)
            cached = None if kpi is None else self._cached_days(tx, kpi_id, kpi.days_version)
            if cached is None:
                missing.append(kpi_id)
            else:
                found[kpi_id] = cached
        for chunk in _chunks(sorted(set(missing))):
            for row in tx.cur.execute(
                "SELECT kpi_id, day, count, exact_total, minimum, maximum, last_at, last_value,"
                f" last_key FROM {tx.tables.kpi_days} WHERE kpi_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                found.setdefault(row[0], {})[date.fromisoformat(row[1])] = _accumulator(row[2:])
        for kpi_id in missing:
            kpi = kpis.get(kpi_id)
            if kpi is not None:
                tx.days[kpi_id] = (kpi.days_version, found.setdefault(kpi_id, {}))
        return found

    # -- KPI detections ------------------------------------------------------------------

    def sync_kpi_detections(self, tx: Tx, kpis: Sequence[KpiRow]) -> None:
        """kpi_breach/red and stale_kpi/no_data for these KPIs at tx.now."""
        if not kpis:
            return
        now = tx.now
        first = min(
            bucket_start(now, k.interval)  # type: ignore[arg-type]
            for k in kpis
        ).date()
        days = self._days(tx, [k.kpi_id for k in kpis], first, now.date())
        holding: list[rules.Finding] = []
        for k in kpis:
            if k.state == "retired":
                continue
            start = bucket_start(now, k.interval)  # type: ignore[arg-type]
            end = bucket_end(start, k.interval)  # type: ignore[arg-type]
            acc = Accumulator.empty()
            for day, a in days.get(k.kpi_id, ()):
                if start.date() <= day < end.date():
                    acc = acc.merge(a)
            value = acc.value(k.aggregation) if acc.count else None  # type: ignore[arg-type]
            holding += rules.kpi_findings(
                k.kpi_id,
                k.direction,  # type: ignore[arg-type]
                k.target,
                k.amber,
                start,
                value,
                k.last_reading_at,
                k.created_at,
                k.interval,  # type: ignore[arg-type]
                now,
                self.policy,
            )
        subjects = [(k.org_id, "kpi", k.kpi_id) for k in kpis]
        self.sync_detections(tx, subjects, KPI_RULES, holding)

    # -- detections ----------------------------------------------------------------------

    def sync_detections(
        self,
        tx: Tx,
        subjects: Sequence[tuple[str, str, str]],
        family: set[tuple[str, str]],
        holding: Sequence[rules.Finding],
    ) -> None:
        """Raise the findings not active yet and resolve the active detections of these
        (org, subject_type, subject_id) subjects and rule family that no longer hold.

        One read of the subjects' detections (active or not: a finding raised again
        continues its detection's version) and one batched write of each kind."""
        if not subjects:
            return
        t = tx.tables.detections
        org_by_subject = {(st, sid): org for org, st, sid in subjects}
        # A subject is keyed by (type, id) from here on: ids of one type in two
        # organisations (owner names) are synced in separate calls (_chronic).
        active: dict[rules.DetectionKey, tuple[str, int, str]] = {}
        stored: dict[str, tuple[int, str, str]] = {}  # detection id → version, evidence, policy
        by_type: dict[str, list[str]] = defaultdict(list)
        for _, st, sid in subjects:
            by_type[st].append(sid)
        for st, ids in by_type.items():
            for chunk in _chunks(sorted(set(ids))):
                for row in tx.cur.execute(
                    "SELECT kind, reason, subject_type, subject_id, period, detection_id,"
                    " version, org_id, resolved_at, evidence, policy_version"
                    f" FROM {t} WHERE subject_type = ? AND subject_id IN ({_marks(len(chunk))})",
                    [st, *chunk],
                ).fetchall():
                    if (row[0], row[1]) not in family:
                        continue
                    stored[row[5]] = (int(row[6]), row[9], row[10])
                    if row[8] is not None or org_by_subject.get((row[2], row[3])) != row[7]:
                        continue
                    key = rules.DetectionKey(row[0], row[1], row[2], row[3], row[4])
                    active[key] = (row[5], int(row[6]), row[7])
        raised, resolved = rules.diff_findings(active, holding)
        if raised:
            orgs = [org_by_subject[(f.key.subject_type, f.key.subject_id)] for f in raised]
            self._raise(tx, list(zip(orgs, raised, strict=True)), stored)
        if resolved:
            self._resolve(tx, [(key, *active[key]) for key in resolved], stored)

    @staticmethod
    def detection_id(org: str, key: rules.DetectionKey) -> str:
        name = f"{org}|{key.kind}|{key.reason}|{key.subject_type}|{key.subject_id}|{key.period}"
        return dashed(url_uuid5_hex("okrstream:detection:" + name))

    def _raise(
        self,
        tx: Tx,
        findings: Sequence[tuple[str, rules.Finding]],
        stored: dict[str, tuple[int, str, str]],
    ) -> None:
        """Raise (org, finding)s: a new detection at version 1, or a resolved one again."""
        rows: list[tuple[Any, ...]] = []
        emitted: list[tuple[str, str, events.Event]] = []
        for org, f in findings:
            key = f.key
            detection_id = self.detection_id(org, key)
            before = stored.get(detection_id)
            version = 1 if before is None else before[0] + 1
            evidence = orjson.dumps(f.evidence, option=orjson.OPT_SORT_KEYS).decode()
            rows.append(
                (
                    detection_id, org, key.kind, key.reason, key.subject_type, key.subject_id,
                    key.period, tx.now_text, f.policy_version, evidence, version,
                )
            )  # fmt: skip
            event = events.DetectionRaised(
                **detection_fields(org, key, detection_id, version, tx.now),
                detected_at=tx.now,
                policy_version=f.policy_version,
                evidence=f.evidence,
            )
            emitted.append((org, key.subject_id, event))
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.detections} (detection_id, org_id, kind, reason,"
            " subject_type, subject_id, period, detected_at, resolved_at, policy_version,"
            " evidence, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)"
            " ON CONFLICT (detection_id) DO UPDATE SET detected_at = excluded.detected_at,"
            " resolved_at = NULL, policy_version = excluded.policy_version,"
            " evidence = excluded.evidence, version = excluded.version",
            rows,
        )
        self.emit_detections(tx, emitted)

    def _resolve(
        self,
        tx: Tx,
        active: Sequence[tuple[rules.DetectionKey, str, int, str]],
        stored: dict[str, tuple[int, str, str]],
    ) -> None:
        """Resolve active detections (key, detection id, version, org)."""
        emitted: list[tuple[str, str, events.Event]] = []
        for key, detection_id, version, org in active:
            _, evidence, policy_version = stored[detection_id]
            event = events.DetectionResolved(
                **detection_fields(org, key, detection_id, version + 1, tx.now),
                resolved_at=tx.now,
                policy_version=str(policy_version),
                evidence=orjson.loads(evidence),
            )
            emitted.append((org, key.subject_id, event))
        tx.cur.executemany(
            f"UPDATE {tx.tables.detections} SET resolved_at = ?, version = ?"
            " WHERE detection_id = ?",
            [(tx.now_text, version + 1, detection_id) for _, detection_id, version, _ in active],
        )
        self.emit_detections(tx, emitted)

    def emit_detections(
        self,
        tx: Tx,
        emitted: Sequence[tuple[str, str, events.Event]],
        *,
        publish: bool | None = None,
    ) -> None:
        """The change feed entries of (org, subject id, detection event)s and, when
        publishing (`publish`, else this projector's setting), their outbox rows for
        okr.detections.v1."""
        publish = self.publish if publish is None else publish
        outbox: list[tuple[str, str, str]] = []
        for org, subject_id, event in emitted:
            body = events.encode(event)
            text = body.decode()
            # The event's canonical JSON is the change's payload as it is (compact, and the
            # same text as dumping its parsed form again).
            self._change_json(tx, org, event.type, subject_id, text)
            if publish:
                outbox.append((DETECTIONS.name, subject_id, text))
                tx.published.append((subject_id, body))
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.outbox} (topic, key, value) VALUES (?, ?, ?)", outbox
        )

    def _change(self, tx: Tx, org: str, kind: str, subject_id: str, payload: Any) -> None:
        """Append to the change feed (written in order by `flush`, in the same transaction)."""
        self._change_json(tx, org, kind, subject_id, orjson.dumps(payload).decode())

    @staticmethod
    def _change_json(tx: Tx, org: str, kind: str, subject_id: str, payload: str) -> None:
        """`_change` with the payload already JSON text."""
        tx.changes.append((org, kind, subject_id, payload, tx.now_text))

    def flush(self, tx: Tx) -> None:
        """Write what the transaction buffered (the change feed); before it commits."""
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.changes} (org_id, kind, subject_id, payload, at)"
            " VALUES (?, ?, ?, ?, ?)",
            tx.changes,
        )
        tx.changes.clear()

    # -- goal events and measurements ----------------------------------------------------

    def apply_goal_batch(
        self,
        items: Sequence[GoalItem],
        notices: Sequence[Notice] = (),
        marks: Sequence[Watermark] = (),
    ) -> list[tuple[str, bytes]]:
        """Fold goal events (objective and KPI streams) and measurement notices; recompute
        the touched objectives, their history, detections and ancestors' rollups. Returns
        the detection events to publish (key, canonical JSON), also kept in the outbox."""
        with self.transaction() as tx:
            self.goal_batch_in(tx, items, notices)
            self.write_watermarks(tx, marks)
        return tx.published

    # -- deferred re-evaluations -------------------------------------------------------

    def apply_goal_take(
        self, items: Sequence[GoalItem], notices: Sequence[Notice], marks: Sequence[Watermark]
    ) -> bool:
        """One take of the objective agent, in one transaction: the goal events are applied
        and their objectives re-evaluated now (a goal event never waits), the goal topic's
        watermarks written; the measurement notices and watermarks are kept for the next
        pass (defer_in). Returns whether anything was deferred."""
        with self.transaction() as tx:
            self.goal_batch_in(tx, items, [])
            self.write_watermarks(tx, [m for m in marks if m.stage != "measure"])
            measured = [m for m in marks if m.stage == "measure"]
            self.defer_in(tx, notices, measured)
        return bool(notices or measured)

    # -- goal events that fail on their own --------------------------------------------------

    def apply_goal_take_by_stream(
        self, items: Sequence[GoalItem], notices: Sequence[Notice], marks: Sequence[Watermark]
    ) -> tuple[bool, list[str]]:
        """After apply_goal_take failed on this take: each stream's goal events in a
        transaction of their own (KPI streams first, as goal_batch_in applies them), then
        the rest of the take (watermarks, deferred notices). A stream whose events fail
        again, not for the database, is parked with the error (Tables.parked_events) and
        keeps its last projection; the others flow. Returns (whether anything was deferred,
        the streams parked). A database that cannot be used raises: nothing is parked for
        that."""
        by_stream: dict[str, list[GoalItem]] = {}
        for item in sorted(items, key=lambda i: not i.event.type.startswith("kpi.")):
            by_stream.setdefault(str(item.event.stream_id), []).append(item)
        parked: list[str] = []
        for stream_id, stream_items in by_stream.items():
            try:
                with self.transaction() as tx:
                    self.goal_batch_in(tx, stream_items, [])
            except DatabaseUnavailableError:
                raise
            except Exception:
                error = traceback.format_exc(limit=-3)[-2000:]
                if stream_items[0].event.type.startswith("kpi.") and self._kpi_alone(stream_items):
                    continue
                log.exception("applying the goal events of stream %s failed; parked", stream_id)
                with self.transaction() as tx:
                    self._park(tx, stream_items, error)
                parked.append(stream_id)
        return self.apply_goal_take([], notices, marks), parked

    def _kpi_alone(self, items: Sequence[GoalItem]) -> bool:
        """A KPI stream whose events failed with the objectives measuring it: apply them
        alone, then re-evaluate those objectives one at a time; one that fails (its own
        evaluation, not the KPI's) is set aside (Tables.set_aside, with no causing reading).
        False when the KPI's own events fail: the stream is parked then."""
        try:
            with self.transaction() as tx:
                touched = self._apply_kpi_events(tx, self._hold_parked(tx, items))
                dependents = self._measuring(tx, touched)
        except DatabaseUnavailableError:
            raise
        except Exception:
            return False
        # Set aside without a cause, and dated before any reading: when its notice is
        # deferred again, a reading's notice for the same objective keeps its place.
        cause = Notice("", "", EPOCH, EPOCH)
        for oid in dependents:
            try:
                with self.transaction() as tx:
                    self.goal_batch_in(tx, [], [], reevaluate=[oid])
            except DatabaseUnavailableError:
                raise
            except Exception:
                log.exception("re-evaluating objective %s (its KPI changed) failed; set aside", oid)
                error = traceback.format_exc(limit=-3)[-2000:]
                with self.transaction() as tx:
                    self._set_aside(tx, cause._replace(objective_id=oid), error)
        return True

    def retry_parked(self) -> int:
        """Apply the parked goal events again (a processor starts, maybe with the fix):
        each stream's in version order, in a transaction that reads them under the writers'
        lock (so an event parked behind them meanwhile comes along). A stream that applies
        leaves the table; one that fails again stays, and is logged. Returns how many
        streams applied."""
        with self.reading() as (cur, tables):
            streams = [
                str(s)
                for (s,) in cur.execute(
                    f"SELECT DISTINCT stream_id FROM {tables.parked_events} ORDER BY stream_id"
                ).fetchall()
            ]
        applied = 0
        for stream_id in streams:
            try:
                with self.transaction() as tx:
                    t = tx.tables.parked_events
                    rows = tx.cur.execute(
                        f"SELECT position, body FROM {t} WHERE stream_id = ?"
                        " ORDER BY stream_version",
                        (stream_id,),
                    ).fetchall()
                    tx.cur.execute(f"DELETE FROM {t} WHERE stream_id = ?", (stream_id,))
                    self.goal_batch_in(
                        tx,
                        [
                            GoalItem(events.decode(b), None if p is None else int(p), b)
                            for p, b in rows
                        ],
                        [],
                    )
            except DatabaseUnavailableError:
                raise
            except Exception:
                log.exception("the parked goal events of stream %s still fail", stream_id)
                continue
            applied += 1
        return applied

    def _hold_parked(self, tx: Tx, items: Sequence[GoalItem]) -> list[GoalItem]:
        """The items to apply now: those of a stream with parked events are parked behind
        them (a stream's events apply in order or not at all)."""
        t = tx.tables.parked_events
        if not items or tx.cur.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is None:
            return list(items)
        held: set[str] = set()
        for chunk in _chunks(sorted({str(i.event.stream_id) for i in items})):
            held.update(
                str(s)
                for (s,) in tx.cur.execute(
                    f"SELECT DISTINCT stream_id FROM {t} WHERE stream_id IN ({_marks(len(chunk))})",
                    chunk,
                ).fetchall()
            )
        behind = [i for i in items if str(i.event.stream_id) in held]
        self._park(tx, behind, "waits behind the stream's parked goal events")
        return [i for i in items if str(i.event.stream_id) not in held]

    def _park(self, tx: Tx, items: Sequence[GoalItem], error: str) -> None:
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.parked_events} (stream_id, stream_version, position, body,"
            " error, parked_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    str(i.event.stream_id),
                    i.event.stream_version,
                    i.position,
                    i.body,
                    error,
                    tx.now_text,
                )
                for i in items
            ],
        )

    def defer_in(self, tx: Tx, notices: Sequence[Notice], marks: Sequence[Watermark]) -> None:
        """Keep `notices` for the next pass (pending_notices, the latest cause per objective)
        and `marks` (measurement watermarks) until every notice deferred with or before them
        is re-evaluated. A burst of readings sends notices for the same objectives batch
        after batch; kept here, each objective is re-evaluated once per pass however many
        arrived, and durably: the records are acknowledged once this commits."""
        if not notices and not marks:
            return
        t = tx.tables
        (seq,) = tx.cur.execute(
            f"SELECT COALESCE(MAX(seq), 0) + 1 FROM (SELECT MAX(seq) AS seq FROM"
            f" {t.pending_notices} UNION ALL SELECT MAX(seq) FROM {t.pending_marks}) AS s"
        ).fetchone() or (1,)
        _keep_notices(tx, t.pending_notices, notices, seq)
        tx.cur.executemany(
            f"INSERT INTO {t.pending_marks} (stage, topic, part, source_part, position, seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(m.stage, m.topic, m.part, m.source_part, m.position, seq) for m in marks],
        )
        self._release_marks(tx)

    def defer_due_later(self) -> int:
        """Defer again the later notices (Tables.later_notices) whose day has come, for the
        next pass; return how many. Run by the tick: a read first, which is all it takes
        nearly always."""
        with self.reading() as (cur, tables):
            if cur.execute(f"SELECT 1 FROM {tables.later_notices} LIMIT 1").fetchone() is None:
                return 0
        with self.transaction() as tx:
            t = tx.tables.later_notices
            today = tx.now.date()
            tomorrow = iso(datetime(today.year, today.month, today.day, tzinfo=UTC) + ONE_DAY)
            rows = tx.cur.execute(
                f"SELECT objective_id, event_id, occurred_at, recorded_at FROM {t}"
                " WHERE occurred_at < ? ORDER BY objective_id",
                (tomorrow,),
            ).fetchall()
            if rows:
                self.defer_in(tx, _notices(rows), [])
                tx.cur.execute(f"DELETE FROM {t} WHERE occurred_at < ?", (tomorrow,))
        return len(rows)

    def _release_marks(self, tx: Tx) -> None:
        """Write the held-back watermarks that no pending notice of their take or an
        earlier one still holds back."""
        t = tx.tables
        (low,) = tx.cur.execute(f"SELECT MIN(seq) FROM {t.pending_notices}").fetchone() or (None,)
        bound = "" if low is None else f" WHERE seq < {int(low)}"
        rows = tx.cur.execute(
            f"SELECT stage, topic, part, source_part, position FROM {t.pending_marks}{bound}"
        ).fetchall()
        if rows:
            self.write_watermarks(tx, [Watermark(*row) for row in rows])
            tx.cur.execute(f"DELETE FROM {t.pending_marks}{bound}")

    def pending_bound(self) -> int | None:
        """The seq of the newest deferred notice (a pass re-evaluates up to it), or None. A
        read: it waits for no writer."""
        with self.reading() as (cur, tables):
            row = cur.execute(f"SELECT MAX(seq) FROM {tables.pending_notices}").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def evaluate_pending(self, upto: int, limit: int) -> tuple[int, bool]:
        """Re-evaluate up to `limit` deferred notices of seq <= `upto`, oldest first, in one
        transaction, and write the watermarks they held back. Returns (how many, whether
        any of seq <= `upto` remain)."""
        with self.transaction() as tx:
            notices = self._pending_slice(tx, upto, limit)
            self.goal_batch_in(tx, [], notices)
            self._done_pending(tx, notices)
            more = tx.cur.execute(
                f"SELECT 1 FROM {tx.tables.pending_notices} WHERE seq <= ? LIMIT 1", (upto,)
            ).fetchone()
        return len(notices), more is not None

    def set_aside_failing(self, upto: int, limit: int) -> list[str]:
        """After evaluate_pending(upto, limit) failed: the same notices one transaction
        each. One that fails again (an evaluation bug, not the database) is dropped from
        the pending ones and logged: the objective keeps its last projection until its next
        notice, and no longer holds every measurement watermark back. Returns the ids of
        the objectives set aside. A database that cannot be used raises: nothing is
        dropped for that."""
        with self.transaction() as tx:
            notices = self._pending_slice(tx, upto, limit)
        return self._each_or_set_aside(notices, self._done_pending)

    def evaluate_notices(self, notices: Sequence[Notice], limit: int) -> list[str]:
        """Re-evaluate the objectives of `notices` in transactions of `limit` (a replay's
        last step): a transaction that fails is done again one objective at a time, and an
        objective that fails on its own is set aside, as set_aside_failing does. Returns
        the ids of the objectives set aside."""
        dropped: list[str] = []
        for at in range(0, len(notices), limit):
            part = notices[at : at + limit]
            try:
                with self.transaction() as tx:
                    self.goal_batch_in(tx, [], part)
            except DatabaseUnavailableError:
                raise
            except Exception:
                log.exception("re-evaluating %s objectives failed; one by one", len(part))
                dropped += self._each_or_set_aside(part)
        return dropped

    def _each_or_set_aside(
        self,
        notices: Sequence[Notice],
        done: Callable[[Tx, Sequence[Notice]], None] = lambda tx, notices: None,
    ) -> list[str]:
        """Re-evaluate each notice's objective in a transaction of its own; one that fails
        on its own (not for the database: that raises) is set aside (Tables.set_aside) and
        logged. `done(tx, [notice])` runs in either transaction. Returns the ids set aside."""
        dropped: list[str] = []
        for notice in notices:
            try:
                with self.transaction() as tx:
                    self.goal_batch_in(tx, [], [notice])
                    done(tx, [notice])
            except DatabaseUnavailableError:
                raise
            except Exception:
                log.exception(
                    "re-evaluating objective %s failed; its notice (reading %s) is set aside",
                    notice.objective_id,
                    notice.event_id,
                )
                error = traceback.format_exc(limit=-3)[-2000:]
                with self.transaction() as tx:
                    done(tx, [notice])
                    self._set_aside(tx, notice, error)
                dropped.append(notice.objective_id)
        return dropped

    def _set_aside(self, tx: Tx, notice: Notice, error: str) -> None:
        tx.cur.execute(
            f"INSERT INTO {tx.tables.set_aside} (objective_id, event_id,"
            " occurred_at, recorded_at, error, set_aside_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (objective_id) DO UPDATE SET"
            # A notice without a cause (a KPI changed) keeps the reading held before.
            f" event_id = CASE WHEN excluded.event_id = '' THEN {tx.tables.set_aside}.event_id"
            " ELSE excluded.event_id END,"
            f" occurred_at = CASE WHEN excluded.event_id = '' THEN {tx.tables.set_aside}"
            ".occurred_at ELSE excluded.occurred_at END,"
            f" recorded_at = CASE WHEN excluded.event_id = '' THEN {tx.tables.set_aside}"
            ".recorded_at ELSE excluded.recorded_at END,"
            " error = excluded.error, set_aside_at = excluded.set_aside_at",
            (
                notice.objective_id,
                notice.event_id,
                iso(notice.occurred_at),
                iso(notice.recorded_at),
                error,
                tx.now_text,
            ),
        )

    def retry_set_aside(self) -> int:
        """Defer the notices of the objectives set aside again (a processor starts: maybe
        with the fix); return how many. They stay listed until evaluated."""
        with self.transaction() as tx:
            rows = tx.cur.execute(
                f"SELECT objective_id, event_id, occurred_at, recorded_at FROM"
                f" {tx.tables.set_aside} ORDER BY objective_id"
            ).fetchall()
            self.defer_in(tx, _notices(rows), [])
        return len(rows)

    def _pending_slice(self, tx: Tx, upto: int, limit: int) -> list[Notice]:
        rows = tx.cur.execute(
            f"SELECT objective_id, event_id, occurred_at, recorded_at FROM"
            f" {tx.tables.pending_notices} WHERE seq <= ? ORDER BY seq, objective_id LIMIT ?",
            (upto, limit),
        ).fetchall()
        return _notices(rows)

    def _done_pending(self, tx: Tx, notices: Sequence[Notice]) -> None:
        """Take these notices off the pending ones and release the watermarks they held
        back (their objectives were re-evaluated, or set aside)."""
        tx.cur.executemany(
            f"DELETE FROM {tx.tables.pending_notices} WHERE objective_id = ?",
            [(n.objective_id,) for n in notices],
        )
        self._release_marks(tx)

    def goal_batch_in(
        self,
        tx: Tx,
        items: Sequence[GoalItem],
        notices: Sequence[Notice],
        *,
        reevaluate: Sequence[str] = (),
    ) -> None:
        """Apply goal events, re-evaluate their objectives, those measuring a KPI they
        changed, those of `notices` (caused by the latest reading of each) and those of
        `reevaluate` (without a cause: no history row). The events of a stream with parked
        events are parked behind them (Tables.parked_events), whoever applies them."""
        items = self._hold_parked(tx, items)
        kpi_items = [i for i in items if i.event.type.startswith("kpi.")]
        objective_items = [i for i in items if not i.event.type.startswith("kpi.")]
        touched_kpis = self._apply_kpi_events(tx, kpi_items)
        by_stream: dict[str, list[GoalItem]] = defaultdict(list)
        for item in objective_items:
            by_stream[str(item.event.stream_id)].append(item)
        causes: dict[str, list[tuple[str, str, datetime, datetime, int | None]]] = defaultdict(list)
        # Coalesced: an objective is re-evaluated once per batch whatever the number of its
        # notices (each would see the same measurements); the latest reading is the cause.
        latest: dict[str, Notice] = {}
        for n in notices:
            keep_latest(latest, n.objective_id, n)
        for oid, n in latest.items():
            causes[oid].append((n.event_id, "reading.recorded", n.occurred_at, n.recorded_at, None))
        # Objectives measuring a KPI whose events were applied, and those asked for.
        redefined = set(self._measuring(tx, touched_kpis)) | set(reevaluate)
        for objective_id in redefined:
            causes.setdefault(objective_id, [])
        ids = sorted(set(by_stream) | set(causes))
        if not ids:
            return
        db_rows = self._objective_rows(tx, ids)
        counted = self._already_counted(
            tx,
            {o: n for o, n in latest.items() if o not in by_stream and o not in redefined},
            db_rows,
        )
        before = self._load_states(tx, [o for o in ids if o not in counted], db_rows)
        after: dict[str, ObjectiveState] = dict(before)
        applied: dict[str, list[GoalItem]] = defaultdict(list)
        goal_rows: list[tuple[Any, ...]] = []
        checkin_rows: list[tuple[Any, ...]] = []
        for stream_id, stream_items in by_stream.items():
            state = after.get(stream_id)
            for item in sorted(stream_items, key=lambda i: i.event.stream_version):
                e = item.event
                try:
                    new = apply(state, e)
                except NotThisObjectiveError as exc:
                    log.warning("skipping %s %s: %s", e.type, e.event_id, exc)
                    continue
                if new is state:
                    continue
                state = new
                applied[stream_id].append(item)
                goal_rows.append(self._goal_row(item))
                if isinstance(e, events.KeyResultCheckedIn):
                    checkin_rows.append(
                        (
                            str(e.event_id),
                            stream_id,
                            str(e.kr_id),
                            e.value,
                            None if e.done is None else int(e.done),
                            e.confidence,
                            e.note,
                            iso(e.occurred_at),
                            iso(e.recorded_at),
                        )
                    )
            if state is not None:
                after[stream_id] = state
        t = tx.tables
        tx.cur.executemany(
            f"INSERT INTO {t.goal_events} (stream_id, stream_version, org_id, event_id, type,"
            " position, occurred_at, recorded_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            goal_rows,
        )
        tx.cur.executemany(
            f"INSERT INTO {t.checkins} (event_id, objective_id, kr_id, value, done, confidence,"
            " note, occurred_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            checkin_rows,
        )
        tx.cur.executemany(
            f"INSERT INTO {t.objective_states} (objective_id, version, format, snapshot)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (objective_id) DO UPDATE SET"
            " version = excluded.version, format = excluded.format, snapshot = excluded.snapshot",
            [
                (oid, after[oid].version, SNAPSHOT_FORMAT, orjson.dumps(after[oid]).decode())
                for oid in sorted(applied)
            ],
        )
        if applied:
            write_meta(tx.cur, links_key(tx.tables), uuid4().hex)
        recompute = sorted(oid for oid in ids if oid in after and oid not in counted)
        self._recompute(tx, recompute, before, after, applied, causes, db_rows)
        tx.cached.update({oid: after[oid] for oid in recompute})
        # Readings of a day after today (accepted up to 5 minutes ahead) are left out of
        # every evaluation today: their notices wait for their day (Tables.later_notices).
        today = tx.now.date()
        later = [n for _, n in sorted(latest.items()) if n.occurred_at.date() > today]
        _keep_notices(tx, tx.tables.later_notices, later)
        aside = tx.tables.set_aside
        if recompute and tx.cur.execute(f"SELECT 1 FROM {aside} LIMIT 1").fetchone() is not None:
            tx.cur.executemany(
                f"DELETE FROM {aside} WHERE objective_id = ?", [(oid,) for oid in recompute]
            )

    def _measuring(self, tx: Tx, kpi_ids: Iterable[str]) -> list[str]:
        """The objectives with a key result measuring one of these KPIs."""
        found: set[str] = set()
        for chunk in _chunks(sorted(kpi_ids)):
            found.update(
                str(o)
                for (o,) in tx.cur.execute(
                    f"SELECT DISTINCT objective_id FROM {tx.tables.key_results}"
                    f" WHERE kpi_id IN ({_marks(len(chunk))})",
                    chunk,
                ).fetchall()
            )
        return sorted(found)

    def _already_counted(
        self, tx: Tx, notices: dict[str, Notice], rows: dict[str, tuple[Any, ...]]
    ) -> set[str]:
        """The objectives of `notices` whose last evaluation here already counted the
        notice's reading, or would count nothing more now: the stored state still has the
        version it evaluated, every KPI it measures still has the days version it read (the
        reading was applied before it), and it was evaluated at or after the reading's
        observed time, or today (a measurement counts whole days up to the evaluation's:
        evaluated again today, it would read the same days; a reading of a later day counts
        once a day comes whose evaluation it is part of). Evaluating them again would give
        what is stored (a later evaluation by another worker read at least as much). Such
        notices come in bulk when readings are applied while a pass is under way: the pass
        counts them in the objectives it reaches later, and their notices would start a
        second pass over those objectives."""
        today = tx.now.date()
        held: dict[str, Seen] = {}
        for oid, notice in notices.items():
            seen = self._seen.get(oid)
            row = rows.get(oid)
            if (
                seen is not None
                and row is not None
                and seen.version == int(row[1])
                and (seen.at >= notice.occurred_at or seen.at.date() == today)
            ):
                held[oid] = seen
        if not held:
            return set()
        kpis = self._kpis(tx, sorted({k for h in held.values() for k, _ in h.inputs}))
        # A KPI not defined at the evaluation (-1: readings, but no days version to tell
        # them by) never matches: it is still missing, or now has a version >= 0.
        return {
            oid
            for oid, h in held.items()
            if all(k in kpis and kpis[k].days_version == v for k, v in h.inputs)
        }

    def _goal_row(self, item: GoalItem) -> tuple[Any, ...]:
        e = item.event
        return (
            str(e.stream_id),
            e.stream_version,
            e.org_id,
            str(e.event_id),
            e.type,
            item.position,
            iso(e.occurred_at),
            iso(e.recorded_at),
            item.body,
        )

    def _apply_kpi_events(self, tx: Tx, items: Sequence[GoalItem]) -> set[str]:
        if not items:
            return set()
        t = tx.tables
        touched: set[str] = set()
        ordered = sorted(items, key=lambda i: (str(i.event.stream_id), i.event.stream_version))
        versions: dict[str, int] = {}
        ids = sorted({str(i.event.stream_id) for i in ordered})
        for chunk in _chunks(ids):
            for kpi_id, version in tx.cur.execute(
                f"SELECT kpi_id, version FROM {t.kpis} WHERE kpi_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                versions[kpi_id] = int(version)
        for item in ordered:
            e = item.event
            kpi_id = str(e.stream_id)
            if e.stream_version <= versions.get(kpi_id, 0):
                # Applied before. The KPI's last event, redelivered, may follow a crash
                # between its commit and the re-evaluation of the objectives measuring it
                # (_kpi_alone): those are re-evaluated again.
                if e.stream_version == versions.get(kpi_id):
                    touched.add(kpi_id)
                continue
            if e.stream_version != versions.get(kpi_id, 0) + 1:
                continue  # beyond a gap that the relay's republish fills
            common = (e.stream_version, iso(e.occurred_at), item.position or 0, kpi_id)
            if isinstance(e, events.KpiDefined):
                if kpi_id in versions:
                    continue
                tx.cur.execute(
                    f"INSERT INTO {t.kpis} (kpi_id, org_id, name, unit, direction, target, amber,"
                    " interval, aggregation, owner, description, state, version, created_at,"
                    " updated_at, last_reading_at, position) VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                    (
                        kpi_id,
                        e.org_id,
                        e.name,
                        e.unit,
                        e.direction,
                        e.target,
                        e.amber,
                        e.interval,
                        e.aggregation,
                        e.owner,
                        e.description,
                        e.stream_version,
                        iso(e.occurred_at),
                        iso(e.occurred_at),
                        self._last_observed(tx, kpi_id),
                        item.position or 0,
                    ),
                )
            elif kpi_id not in versions:
                log.warning("skipping %s for unknown KPI %s", e.type, kpi_id)
                continue
            elif isinstance(e, events.KpiRevised):
                tx.cur.execute(
                    f"UPDATE {t.kpis} SET name = COALESCE(?, name), owner = COALESCE(?, owner),"
                    " description = COALESCE(?, description), version = ?, updated_at = ?,"
                    " position = ? WHERE kpi_id = ?",
                    (e.name, e.owner, e.description, *common),
                )
            elif isinstance(e, events.KpiRetargeted):
                if self._latest_target(tx, e):
                    tx.cur.execute(
                        f"UPDATE {t.kpis} SET target = ?, amber = ?, version = ?,"
                        " updated_at = ?, position = ? WHERE kpi_id = ?",
                        (e.target, e.amber, *common),
                    )
                else:  # a backdated retargeting (an import): a later one stays in force
                    tx.cur.execute(
                        f"UPDATE {t.kpis} SET version = ?, updated_at = ?, position = ?"
                        " WHERE kpi_id = ?",
                        common,
                    )
            elif isinstance(e, events.KpiRetired):
                tx.cur.execute(
                    f"UPDATE {t.kpis} SET state = 'retired', version = ?, updated_at = ?,"
                    " position = ? WHERE kpi_id = ?",
                    common,
                )
            versions[kpi_id] = e.stream_version
            touched.add(kpi_id)
            tx.cur.execute(
                f"INSERT INTO {t.goal_events} (stream_id, stream_version, org_id, event_id, type,"
                " position, occurred_at, recorded_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                self._goal_row(item),
            )
            self._change(tx, e.org_id, "kpi.updated", kpi_id, {"kpi_id": kpi_id})
        kpis = self._kpis(tx, sorted(touched))
        self.sync_kpi_detections(tx, list(kpis.values()))
        return touched

    @staticmethod
    def _latest_target(tx: Tx, e: events.KpiRetargeted) -> bool:
        """Whether `e` is the KPI's latest target by valid time (occurred_at, then stream
        version) among those applied: the KPI's row holds the target in force, not the last
        one recorded, as /series and key results judge by valid time."""
        row = tx.cur.execute(
            f"SELECT occurred_at, stream_version FROM {tx.tables.goal_events}"
            " WHERE stream_id = ? AND type = 'kpi.retargeted'"
            " ORDER BY occurred_at DESC, stream_version DESC LIMIT 1",
            (str(e.stream_id),),
        ).fetchone()
        return row is None or (iso(e.occurred_at), e.stream_version) >= (row[0], int(row[1]))

    def _last_observed(self, tx: Tx, kpi_id: str) -> str | None:
        # Readings may have been applied before their KPI's definition reached us.
        row = tx.cur.execute(
            f"SELECT MAX(observed_at) FROM {tx.tables.readings} WHERE kpi_id = ?", (kpi_id,)
        ).fetchone()
        return None if row is None else row[0]

    def _objective_rows(self, tx: Tx, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The stored objective rows (id, version, score, progress, rollup_score, parent_id,
        state, position) of these objectives."""
        rows: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(list(ids)):
            for row in tx.cur.execute(
                "SELECT objective_id, version, score, progress, rollup_score, parent_id, state,"
                f" position FROM {tx.tables.objectives}"
                f" WHERE objective_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                rows[row[0]] = row
        return rows

    def _load_states(
        self, tx: Tx, ids: Sequence[str], rows: dict[str, tuple[Any, ...]]
    ) -> dict[str, ObjectiveState]:
        """Current states of the objectives with stored `rows`: cached, else the stored
        snapshot (each checked against the stored version), else a fold of the stored goal
        events."""
        t = tx.tables
        states: dict[str, ObjectiveState] = {}
        missing: list[str] = []
        now = time.monotonic()
        for oid in ids:
            stored = rows.get(oid)
            if stored is None:
                continue
            held = self._cache.get(oid, now)
            if held is not None and held.version == int(stored[1]):
                states[oid] = held
            else:
                missing.append(oid)
        missing = self._snapshots(tx, missing, rows, states)
        bodies: dict[str, list[events.Event]] = defaultdict(list)
        for chunk in _chunks(missing):
            for stream_id, body in tx.cur.execute(
                f"SELECT stream_id, body FROM {t.goal_events}"
                f" WHERE stream_id IN ({_marks(len(chunk))}) ORDER BY stream_id, stream_version",
                chunk,
            ).fetchall():
                bodies[stream_id].append(events.decode(body))
        for oid in missing:
            state = fold(bodies.get(oid, ()))
            if state is not None:
                states[oid] = state
        return states

    def _measurements(
        self, tx: Tx, states: Sequence[tuple[ObjectiveState, datetime]]
    ) -> tuple[dict[str, dict[str, Measurement]], dict[str, dict[str, Measurement]]]:
        """Measurements of the KPI-linked key results, by objective and key result: at the
        evaluation time, and at the KR's latest (re)targeting (valid time). Records in
        `tx.inputs` what each evaluation reads."""
        linked = [(s, at, kr) for s, at in states for kr in s.key_results if kr.kpi_id is not None]
        kpi_ids = sorted({kr.kpi_id for _, _, kr in linked if kr.kpi_id is not None})
        kpis = self._kpis(tx, kpi_ids)
        for s, at in states:
            tx.inputs[s.id] = (_inputs(s, kpis), at)
        if not linked:
            return {}, {}
        days = self._all_days(tx, kpi_ids, kpis)
        found: dict[str, dict[str, Measurement]] = defaultdict(dict)
        at_change: dict[str, dict[str, Measurement]] = defaultdict(dict)
        # One measure_many pass per (KPI, aggregation, interval, period) answers every
        # instant of every key result that shares them.
        # (measurements, kr id, instant, exact, known): `known` is when a closed
        # objective's close was recorded: its score is final, the readings recorded after
        # it do not count.
        groups: dict[
            tuple[Any, ...],
            list[tuple[dict[str, Measurement], str, datetime, bool, datetime | None]],
        ]
        groups = defaultdict(list)
        for s, at, kr in linked:
            assert kr.kpi_id is not None
            kpi = kpis.get(kr.kpi_id)
            aggregation = kr.aggregation or (kpi.aggregation if kpi else "last")
            interval = kpi.interval if kpi else "day"
            known = None if (cut := s.final_cut) is None else cut[1]
            group = groups[(kr.kpi_id, aggregation, interval, s.period)]
            group.append((found[s.id], kr.id, at, True, known))
            # target_already_met's instant: its day counts whole (cutting it would read the
            # stored readings at nearly every evaluation of a key result added that day).
            group.append((at_change[s.id], kr.id, min(at, kr.targets[-1].since), False, known))
        late: dict[tuple[str, date, date, datetime], set[date]] = {}
        for (kpi_id, aggregation, interval, period), wanted in groups.items():
            series = self._series(tx, kpis.get(kpi_id), kpi_id, days, aggregation, interval, period)
            kpi_days = days.get(kpi_id, {})
            for into, kr_id, at, exact, known in wanted:
                recount: dict[date, datetime | None] = {}
                if known is not None:
                    span = (kpi_id, period.start, at.astimezone(UTC).date(), known)
                    if span not in late:
                        late[span] = self._recorded_after(tx, *span)
                    recount = dict.fromkeys(late[span])
                day = kpi_days.get(at.astimezone(UTC).date()) if exact and at < tx.now else None
                if day is not None and day.last_at is not None and day.last_at > at:
                    # Readings observed after a past evaluation time on its day (a close at
                    # 10:00 and a reading at 20:00): the series counts whole days, so
                    # measure with that day cut at `at`; only a closed objective's key
                    # results, and only while readings of its closing day come in. An
                    # evaluation now counts today whole: a reading observed a little ahead
                    # (up to 5 minutes is accepted) counts at once, as later notices count
                    # one of tomorrow once its day comes, and no pass would count it later.
                    recount[at.astimezone(UTC).date()] = at
                if recount:
                    into[kr_id] = measure(
                        self._recounted(tx, kpi_id, kpi_days, recount, known).items(),
                        aggregation,
                        interval,
                        period,
                        at,
                    )
                else:
                    into[kr_id] = series.at(at)
        return found, at_change

    def _recorded_after(
        self, tx: Tx, kpi_id: str, first: date, last: date, known: datetime
    ) -> set[date]:
        """The days in [first, last] of the KPI with readings recorded after `known` (or not
        known to have none: a day stored before v8 tracked it)."""
        return {
            date.fromisoformat(str(day))
            for (day,) in tx.cur.execute(
                f"SELECT day FROM {tx.tables.kpi_days} WHERE kpi_id = ? AND day >= ?"
                " AND day <= ? AND (last_recorded IS NULL OR last_recorded > ?)",
                (kpi_id, first.isoformat(), last.isoformat(), iso(known)),
            ).fetchall()
        }

    def _recounted(
        self,
        tx: Tx,
        kpi_id: str,
        kpi_days: dict[date, Accumulator],
        recount: dict[date, datetime | None],
        known: datetime | None,
    ) -> dict[date, Accumulator]:
        """The KPI's days with these days counted again from the stored readings: each up
        to its instant (None: the whole day; API.md: readings up to the evaluation time),
        and only those recorded up to `known` when given."""
        days = {d: acc for d, acc in kpi_days.items() if d not in recount}
        for day, upto in sorted(recount.items()):
            start = datetime.combine(day, dt_time(), tzinfo=UTC)
            end = upto if upto is not None else start + timedelta(days=1, microseconds=-1)
            query = (
                f"SELECT value, observed_at, reading_id FROM {tx.tables.readings}"
                " WHERE kpi_id = ? AND observed_at >= ? AND observed_at <= ?"
            )
            params: list[Any] = [kpi_id, iso(start), iso(end)]
            if known is not None:
                query += " AND recorded_at <= ?"
                params.append(iso(known))
            rows = tx.cur.execute(query, params).fetchall()
            if rows:
                last_at, last_key, last_value = max((str(o), str(k), float(v)) for v, o, k in rows)
                days[day] = Accumulator.of_values(
                    [float(v) for v, _, _ in rows], parse_iso(last_at), last_key, last_value
                )
        return days

    def _series(
        self,
        tx: Tx,
        kpi: KpiRow | None,
        kpi_id: str,
        days: dict[str, dict[date, Accumulator]],
        aggregation: str,
        interval: str,
        period: Period,
    ) -> Series:
        """The KPI's prepared Series, kept across batches while its days_version holds (one
        entry per (KPI, aggregation, interval, period): a newer version replaces it). One
        built here is kept once the transaction commits (_keep_series): a rolled-back one
        may have read days that a later transaction reaches under the same version."""
        key = (kpi_id, aggregation, interval, period)
        entry = None if kpi is None else tx.series.get(key) or self._series_cache.get(key)
        if entry is not None and entry[0] == kpi.days_version:  # type: ignore[union-attr]
            return entry[1]
        found = Series.of(
            days.get(kpi_id, {}).items(),
            aggregation,  # type: ignore[arg-type]
            interval,  # type: ignore[arg-type]
            period,
        )
        if kpi is not None:
            tx.series[key] = (kpi.days_version, found)
        return found

    def _keep_series(self, found: dict[tuple[Any, ...], tuple[int, Series]]) -> None:
        for key, entry in found.items():
            self._series_cache.pop(key, None)
            self._series_cache[key] = entry
        while len(self._series_cache) > self.series_cache_size:
            del self._series_cache[next(iter(self._series_cache))]

    def _snapshots(
        self,
        tx: Tx,
        ids: list[str],
        rows: dict[str, tuple[Any, ...]],
        states: dict[str, ObjectiveState],
    ) -> list[str]:
        """Load into `states` the stored snapshots of `ids` at their objective rows'
        versions; return the ids still to fold (no such snapshot, or an unreadable one)."""
        found: set[str] = set()
        for chunk in _chunks(ids):
            for oid, version, form, snapshot in tx.cur.execute(
                f"SELECT objective_id, version, format, snapshot FROM {tx.tables.objective_states}"
                f" WHERE objective_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                if int(version) != int(rows[oid][1]) or int(form) != SNAPSHOT_FORMAT:
                    continue
                try:
                    states[oid] = from_snapshot(orjson.loads(snapshot))
                except (ValueError, TypeError, KeyError) as exc:
                    log.warning("folding objective %s: its snapshot is unreadable: %s", oid, exc)
                    continue
                found.add(oid)
        return [oid for oid in ids if oid not in found]

    def evaluation_time(self, state: ObjectiveState, now: datetime) -> datetime:
        """When an objective is evaluated: now, or its close (a closed score is final)."""
        cut = state.final_cut
        return now if cut is None else min(now, cut[0])

    def _recompute(
        self,
        tx: Tx,
        ids: Sequence[str],
        before: dict[str, ObjectiveState],
        after: dict[str, ObjectiveState],
        applied: dict[str, list[GoalItem]],
        causes: dict[str, list[tuple[str, str, datetime, datetime, int | None]]],
        db_rows: dict[str, tuple[Any, ...]],
    ) -> None:
        t = tx.tables
        now = tx.now
        evaluated = [(after[oid], self.evaluation_time(after[oid], now)) for oid in ids]
        # Intermediate states of the batch only add key results, so the final state's KRs
        # cover every KPI any of them links.
        measurements, at_change = self._measurements(tx, evaluated)
        last_history = self._last_history(tx, ids)
        history_rows: list[tuple[Any, ...]] = []
        rollup_queue: set[str] = set()
        owners: set[tuple[str, str]] = set()
        subjects_obj: list[tuple[str, str, str]] = []
        subjects_kr: list[tuple[str, str, str]] = []
        holding_obj: list[rules.Finding] = []
        holding_kr: list[rules.Finding] = []
        objective_rows: list[tuple[Any, ...]] = []
        kr_rows: list[tuple[Any, ...]] = []
        closed: list[tuple[ObjectiveState, float]] = []
        reopened: list[ObjectiveState] = []
        for state, at in evaluated:
            oid = state.id
            m = measurements.get(oid, {})
            seq, prev_score, prev_krs = last_history.get(oid, (0, None, {}))
            # One history row per change: evaluate after each applied event in turn.
            steps: list[tuple[ObjectiveState, tuple[str, str, datetime, datetime, int | None]]]
            steps = []
            partial = before.get(oid)
            for item in applied.get(oid, ()):
                partial = apply(partial, item.event)
                e = item.event
                steps.append(
                    (partial, (str(e.event_id), e.type, e.occurred_at, e.recorded_at, None))
                )
            for cause in causes.get(oid, ()):
                steps.append((state, cause))
            if not steps:
                steps.append((state, ("", "", now, now, None)))
            final: tuple[ObjectiveScore, dict[str, KeyResultScore]] | None = None
            for step_state, cause in steps:
                if step_state is state:  # evaluated at `at`, as below: once
                    final = final or evaluate(state, m, at, self.policy)
                    score, kr_scores = final
                else:
                    score, kr_scores = evaluate(
                        step_state, m, self.evaluation_time(step_state, now), self.policy
                    )
                krs = {k: v.score for k, v in kr_scores.items()}
                if cause[0] and score_changed(prev_score, score, prev_krs, krs):
                    seq += 1
                    history_rows.append(
                        (
                            oid,
                            seq,
                            state.org_id,
                            iso(cause[2]),
                            iso(cause[3]),
                            cause[0],
                            cause[1],
                            score.score,
                            score.progress,
                            orjson.dumps(krs, option=orjson.OPT_SORT_KEYS).decode(),
                        )
                    )
                    prev_score, prev_krs = score, krs
            score, kr_scores = final or evaluate(state, m, at, self.policy)
            row = db_rows.get(oid)
            position = max(
                [int(row[7]) if row else 0] + [i.position or 0 for i in applied.get(oid, ())]
            )
            objective_rows.append(self._objective_row(state, score, at, position))
            kr_rows += self._key_result_rows(state, kr_scores, at)
            # Only new measurements, and neither score nor progress moved: the rollups and
            # the change feed have nothing new (the row is still written: expected progress,
            # status and forecast follow the time).
            same = (
                row is not None
                and oid not in applied
                and int(row[1]) == state.version
                and row[2] == score.score
                and row[3] == score.progress
            )
            if not same:
                rollup_queue.add(oid)
                if row is not None and row[5] is not None and row[5] != state.parent_id:
                    rollup_queue.add(str(row[5]))
                if state.parent_id is not None:
                    rollup_queue.add(state.parent_id)
                self._change(
                    tx,
                    state.org_id,
                    "objective.updated",
                    oid,
                    {"objective_id": oid, "version": state.version, "score": score.score},
                )
            # Detections of the objective and its key results.
            subjects_obj.append((state.org_id, "objective", oid))
            holding_obj += rules.objective_findings(
                oid, state.owner, state.state, state.period, score, at, self.policy
            )
            for kr in state.key_results:
                subjects_kr.append((state.org_id, "key_result", kr.id))
                if kr.removed or kr.kpi_id is None or state.state == "archived":
                    continue
                # Deterministic whatever order readings and goal events arrive in: does the
                # KPI's value at the (re)targeting's valid time meet the target set then?
                since = min(at, kr.targets[-1].since)
                measured = at_change.get(oid, {}).get(kr.id)
                if measured is None or measured.current is None:
                    continue
                finding = rules.target_already_met(
                    key_result_input(state, kr, measured, since), oid, state.period, self.policy
                )
                if finding is not None:
                    holding_kr.append(finding)
            # Archived after its close, an objective keeps its final score (and its place
            # in its owner's closures), whether the archive came in the close's batch or not.
            if state.state != "active" and state.closed_at is not None:
                closed.append((state, score.score))
            elif state.state == "active":
                reopened.append(state)
        self._write_objectives(tx, objective_rows)
        self._write_key_results(tx, self._changed_key_results(tx, ids, kr_rows))
        self._closures(tx, closed, reopened, owners)
        tx.cur.executemany(
            f"INSERT INTO {t.score_history} (objective_id, seq, org_id, occurred_at,"
            " recorded_at, event_id, event_type, score, progress, kr_scores)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            history_rows,
        )
        self.sync_detections(tx, subjects_obj, OBJECTIVE_RULES, holding_obj)
        self.sync_detections(tx, subjects_kr, KR_RULES, holding_kr)
        self._chronic(tx, owners)
        self.rollups(tx, rollup_queue)

    def _closures(
        self,
        tx: Tx,
        closed: Sequence[tuple[ObjectiveState, float]],
        active: Sequence[ObjectiveState],
        owners: set[tuple[str, str]],
    ) -> None:
        """Closed objectives' final scores per owner; reopened ones leave the list, and a
        closed one is listed under its current owner only. Every owner whose list changed
        (the one a row left too: a reopen and an owner change in one batch) is in `owners`
        for the chronic rules."""
        t = tx.tables.owner_closures
        now_closed = {s.id: s for s, _ in closed if s.closed_at}
        by_id = {s.id: s for s in active} | now_closed
        gone: list[tuple[str, str, str]] = []
        for chunk in _chunks(sorted(by_id)):
            for org, owner, oid in tx.cur.execute(
                f"SELECT org_id, owner, objective_id FROM {t}"
                f" WHERE objective_id IN ({_marks(len(chunk))})",
                chunk,
            ).fetchall():
                state = by_id[str(oid)]
                if state.org_id != org:
                    continue
                if str(oid) not in now_closed or state.owner != owner:
                    gone.append((str(org), str(owner), str(oid)))
        gone.sort()
        tx.cur.executemany(
            f"DELETE FROM {t} WHERE org_id = ? AND owner = ? AND objective_id = ?", gone
        )
        owners.update((org, owner) for org, owner, _ in gone)
        tx.cur.executemany(
            f"INSERT INTO {t} (org_id, owner, objective_id, closed_at, score)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (org_id, owner, objective_id) DO UPDATE"
            " SET closed_at = excluded.closed_at, score = excluded.score",
            [
                (s.org_id, s.owner, s.id, iso(s.closed_at), score)
                for s, score in closed
                if s.closed_at
            ],
        )
        owners.update((s.org_id, s.owner) for s, _ in closed)

    def _chronic(self, tx: Tx, owners: set[tuple[str, str]]) -> None:
        """Judge these (org, owner)s again. An owner is a name, unique within its
        organisation only, so each organisation's owners are synced on their own: the
        detection rules key a subject by (type, id)."""
        by_org: dict[str, list[str]] = defaultdict(list)
        for org, owner in sorted(owners):
            by_org[org].append(owner)
        for org, names in by_org.items():
            holding: list[rules.Finding] = []
            for owner in names:
                scores = [
                    float(s)
                    for (s,) in tx.cur.execute(
                        f"SELECT score FROM {tx.tables.owner_closures}"
                        " WHERE org_id = ? AND owner = ? ORDER BY closed_at, objective_id",
                        (org, owner),
                    ).fetchall()
                ]
                holding += rules.chronic_findings(owner, scores, self.policy)
            subjects = [(org, "owner", owner) for owner in names]
            self.sync_detections(tx, subjects, OWNER_RULES, holding)

    def _last_history(
        self, tx: Tx, ids: Sequence[str]
    ) -> dict[str, tuple[int, ObjectiveScore | None, dict[str, float]]]:
        found: dict[str, tuple[int, ObjectiveScore | None, dict[str, float]]] = {}
        t = tx.tables.score_history
        for chunk in _chunks(list(ids)):
            for oid, seq, score, progress, kr_scores in tx.cur.execute(
                f"SELECT h.objective_id, h.seq, h.score, h.progress, h.kr_scores FROM {t} h"
                f" WHERE h.objective_id IN ({_marks(len(chunk))}) AND h.seq ="
                f" (SELECT MAX(seq) FROM {t} m WHERE m.objective_id = h.objective_id)",
                chunk,
            ).fetchall():
                prev = ObjectiveScore(score, progress, 0.0, None, "not_started", None, "fail", "")
                found[oid] = (int(seq), prev, orjson.loads(kr_scores))
        return found

    @staticmethod
    def _objective_row(
        s: ObjectiveState, score: ObjectiveScore, at: datetime, position: int
    ) -> tuple[Any, ...]:
        return (
            s.id,
            s.org_id,
            s.title,
            s.description,
            s.owner,
            s.level,
            s.parent_id,
            s.period.start.isoformat(),
            s.period.end.isoformat(),
            s.state,
            s.version,
            score.score,
            score.progress,
            score.score,  # rollup_score: recomputed by `rollups`
            score.expected,
            score.health,
            score.status,
            score.forecast,
            score.zone,
            score.policy_version,
            iso(at),
            iso(s.created_at),
            iso(s.updated_at),
            _opt_iso(s.closed_at),
            position,
        )

    def _write_objectives(self, tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.objectives} (objective_id, org_id, title, description,"
            " owner, level, parent_id, period_start, period_end, state, version, score, progress,"
            " rollup_score, expected, health, status, forecast, zone, policy_version,"
            " evaluated_at, created_at, updated_at, closed_at, position) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (objective_id) DO UPDATE SET title = excluded.title,"
            " description = excluded.description, owner = excluded.owner,"
            " level = excluded.level, parent_id = excluded.parent_id,"
            " period_start = excluded.period_start, period_end = excluded.period_end,"
            " state = excluded.state, version = excluded.version, score = excluded.score,"
            " progress = excluded.progress, expected = excluded.expected,"
            " health = excluded.health, status = excluded.status, forecast = excluded.forecast,"
            " zone = excluded.zone, policy_version = excluded.policy_version,"
            " evaluated_at = excluded.evaluated_at, updated_at = excluded.updated_at,"
            " closed_at = excluded.closed_at, position = excluded.position",
            rows,
        )

    @staticmethod
    def _key_result_rows(
        s: ObjectiveState,
        scores: dict[str, KeyResultScore],
        at: datetime,
    ) -> list[tuple[Any, ...]]:
        rows = []
        for kr in s.key_results:
            scored = scores.get(kr.id)
            force = target_at(s, kr, at)
            done = latest_done(s, kr.id, at)
            rows.append(
                (
                    kr.id,
                    s.id,
                    s.org_id,
                    kr.ordinal,
                    kr.title,
                    kr.kind,
                    kr.unit,
                    force.start,
                    force.target,
                    kr.comparison,
                    kr.weight,
                    kr.kpi_id,
                    kr.aggregation,
                    None if scored is None else scored.current,
                    0.0 if scored is None else scored.progress,
                    0.0 if scored is None else scored.score,
                    latest_confidence(s, kr.id, at),
                    None if done is None else int(done),
                    int(kr.removed),
                    iso(kr.updated_at),
                )
            )
        return rows

    def _changed_key_results(
        self, tx: Tx, ids: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """The key result rows that differ from the stored ones (most key results of an
        objective re-evaluated for new readings do not measure the KPI that changed)."""
        stored: set[tuple[Any, ...]] = set()
        for chunk in _chunks(list(ids)):
            stored.update(
                tuple(r)
                for r in tx.cur.execute(
                    f"SELECT {KR_COLUMNS} FROM {tx.tables.key_results}"
                    f" WHERE objective_id IN ({_marks(len(chunk))})",
                    chunk,
                ).fetchall()
            )
        return [r for r in rows if r not in stored]

    def _write_key_results(self, tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
        tx.cur.executemany(
            f"INSERT INTO {tx.tables.key_results} ({KR_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kr_id) DO UPDATE SET title = excluded.title, start = excluded.start,"
            " target = excluded.target, weight = excluded.weight, kpi_id = excluded.kpi_id,"
            " current = excluded.current, progress = excluded.progress, score = excluded.score,"
            " confidence = excluded.confidence, done = excluded.done,"
            " removed = excluded.removed, updated_at = excluded.updated_at",
            rows,
        )

    def rollups(self, tx: Tx, queue: set[str]) -> None:
        """Recompute rollup_score of these objectives and, when it changes, their ancestors
        (children are read from the rows already written in this transaction).

        Level by level, three reads per level whatever its size: an objective whose child
        changed in this level is recomputed in the next one, from the written values, so
        the result is the fixpoint however the queue is ordered."""
        t = tx.tables
        pending = sorted(queue)
        levels = 0
        while pending and levels < MAX_ROLLUP_LEVELS:  # a parent cycle must not loop forever
            levels += 1
            rows: dict[str, tuple[Any, Any, Any]] = {}
            with_krs: set[str] = set()
            children: dict[str, list[float]] = defaultdict(list)
            for chunk in _chunks(pending):
                marks = _marks(len(chunk))
                for oid, score, rollup, parent in tx.cur.execute(
                    f"SELECT objective_id, score, rollup_score, parent_id FROM {t.objectives}"
                    f" WHERE objective_id IN ({marks})",
                    chunk,
                ).fetchall():
                    rows[oid] = (score, rollup, parent)
                with_krs.update(
                    oid
                    for (oid,) in tx.cur.execute(
                        f"SELECT DISTINCT objective_id FROM {t.key_results}"
                        f" WHERE removed = 0 AND objective_id IN ({marks})",
                        chunk,
                    ).fetchall()
                )
                for parent, rollup in tx.cur.execute(
                    f"SELECT parent_id, rollup_score FROM {t.objectives}"
                    f" WHERE parent_id IN ({marks}) AND state <> 'archived'"
                    " ORDER BY parent_id, objective_id",
                    chunk,
                ).fetchall():
                    children[parent].append(float(rollup))
            updates: list[tuple[float, str]] = []
            parents: set[str] = set()
            for oid in pending:
                row = rows.get(oid)
                if row is None:
                    continue
                score, rollup, parent = row
                own = float(score) if oid in with_krs else None
                value = rollup_score(own, children.get(oid, []))
                if value != rollup:
                    updates.append((value, oid))
                    if parent is not None:
                        parents.add(str(parent))
            tx.cur.executemany(
                f"UPDATE {t.objectives} SET rollup_score = ? WHERE objective_id = ?", updates
            )
            pending = sorted(parents)

    # -- time ----------------------------------------------------------------------------

    def tick_step(
        self, after: tuple[str, str] = TICK_START, limit: int = TICK_CHUNK
    ) -> tuple[str, str] | None:
        """One transaction of the time-driven rules at the clock's now: expected progress,
        status and forecast of active objectives (and the detections they trigger:
        forecast, period ended, achieved early), then KPI staleness and current-bucket
        status. Up to `limit` subjects after `after` = (subject type, id), from TICK_START.
        Returns where the next step starts, or None when the tick is done (the detections
        go out through the outbox). In steps, a tick over many subjects holds neither the
        writer nor much memory for long."""
        with self.transaction() as tx:
            return self.tick_chunk_in(tx, after, limit)

    def tick_in(self, tx: Tx) -> None:
        """The whole tick in the caller's transaction (the replay's swap), chunk by chunk.
        Due later notices stay for the live processor's tick, which starts a pass for them."""
        after: tuple[str, str] | None = TICK_START
        while after is not None:
            after = self.tick_chunk_in(tx, after, TICK_CHUNK)

    def tick_chunk_in(self, tx: Tx, after: tuple[str, str], limit: int) -> tuple[str, str] | None:
        """The time-driven rules of up to `limit` subjects after `after`, in `tx`; returns
        where the next step starts (None: the tick is done). Rules that fail (a bug, not
        the database) are run again subject by subject, each under a savepoint: a subject
        whose rules fail on its own is logged and keeps its projection until a tick passes
        it, and the rest of the tick goes on (the worker would otherwise crash on every
        tick, and a replay's swap, which ticks, could never complete)."""
        kind, last = after
        subjects = self._tick_subjects(tx, kind, last, limit)
        following: tuple[str, str] | None
        if len(subjects) == limit:
            following = (kind, _subject_id(subjects[-1]))
        else:
            following = ("kpi", "") if kind == "objective" else None
        try:
            with _savepoint(tx, "tick"):
                self._tick_in(tx, kind, subjects)
        except Cursor.unavailable_errors:
            raise
        except Exception:
            log.exception("a tick step of %s %ss failed; one by one", len(subjects), kind)
            for subject in subjects:
                try:
                    with _savepoint(tx, "tick"):
                        self._tick_in(tx, kind, [subject])
                except Cursor.unavailable_errors:
                    raise
                except Exception:
                    log.exception(
                        "the tick of %s %s failed; it keeps its projection until a tick passes it",
                        kind,
                        _subject_id(subject),
                    )
        return following

    def _tick_subjects(self, tx: Tx, kind: str, after: str, limit: int) -> list[Any]:
        """Up to `limit` subjects of the tick whose ids follow `after`: the rows of active
        objectives, or KpiRows."""
        t = tx.tables
        if kind == "objective":
            return tx.cur.execute(
                "SELECT objective_id, org_id, owner, state, period_start, period_end, score,"
                f" progress, expected, status, forecast FROM {t.objectives}"
                " WHERE state = 'active' AND objective_id > ? ORDER BY objective_id LIMIT ?",
                (after, limit),
            ).fetchall()
        kpi_ids = [
            str(k)
            for (k,) in tx.cur.execute(
                f"SELECT kpi_id FROM {t.kpis} WHERE kpi_id > ? ORDER BY kpi_id LIMIT ?",
                (after, limit),
            ).fetchall()
        ]
        found = self._kpis(tx, kpi_ids)
        return [found[k] for k in kpi_ids if k in found]

    def _tick_in(self, tx: Tx, kind: str, subjects: Sequence[Any]) -> None:
        if kind == "objective":
            self._tick_objectives(tx, subjects)
        else:
            self.sync_kpi_detections(tx, subjects)

    def _tick_objectives(self, tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
        """Re-evaluate the time-driven parts of these active objectives (_tick_subjects'
        rows)."""
        t = tx.tables
        now = tx.now
        holding: list[rules.Finding] = []
        subjects: list[tuple[str, str, str]] = []
        updates: list[tuple[Any, ...]] = []
        for oid, org, owner, state, start, end, score, progress, expected, status, fc in rows:
            period = Period(date.fromisoformat(start), date.fromisoformat(end))
            fixed = KeyResultScore(progress=float(progress), score=float(score), current=None)
            view = score_objective([(1.0, fixed)], period, now, self.policy)
            subjects.append((org, "objective", oid))
            holding += rules.objective_findings(oid, owner, state, period, view, now, self.policy)
            if (
                view.status != status
                or (view.forecast is None) != (fc is None)
                or abs(view.expected - float(expected)) >= 0.001
            ):
                updates.append(
                    (
                        view.expected,
                        view.health,
                        view.status,
                        view.forecast,
                        iso(now),
                        oid,
                    )
                )
        tx.cur.executemany(
            f"UPDATE {t.objectives} SET expected = ?, health = ?, status = ?, forecast = ?,"
            " evaluated_at = ? WHERE objective_id = ?",
            updates,
        )
        self.sync_detections(tx, subjects, OBJECTIVE_RULES, holding)

    def kpi_org_state(self, kpi_id: str) -> tuple[str, str] | None:
        """(org_id, state) of a KPI in the live generation, or None when unknown."""
        with self.reading() as (cur, tables):
            row = cur.execute(
                f"SELECT org_id, state FROM {tables.kpis} WHERE kpi_id = ?",
                (kpi_id,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    # -- outbox --------------------------------------------------------------------------

    def outbox(self, limit: int = 1000) -> tuple[int, list[tuple[int, str, str, bytes]]]:
        """Detection events not yet confirmed published: the live generation, and its
        entries (seq, topic, key, value)."""
        with self.reading() as (cur, tables):
            return tables.generation, [
                (int(seq), topic, key, value.encode())
                for seq, topic, key, value in cur.execute(
                    f"SELECT seq, topic, key, value FROM {tables.outbox} ORDER BY seq LIMIT ?",
                    (limit,),
                ).fetchall()
            ]

    def published(self, generation: int, up_to_seq: int) -> None:
        """Forget the outbox entries of `generation` up to `up_to_seq` once they are on
        Kafka. When a replay's swap has made another generation live meanwhile, nothing:
        its outbox numbers its entries anew, and holds a copy of those not forgotten yet
        (services/processor/episodes.py), which are published again (the same events)."""
        with self.transaction() as tx:
            if tx.tables.generation == generation:
                tx.cur.execute(f"DELETE FROM {tx.tables.outbox} WHERE seq <= ?", (up_to_seq,))


def detection_fields(
    org: str, key: rules.DetectionKey, detection_id: str, version: int, now: datetime
) -> dict[str, Any]:
    """Envelope and key of a detection event: its stream is the detection; the event id is
    derived from (detection, version), so a redelivered batch emits the same event."""
    return {
        "event_id": dashed(url_uuid5_hex(f"okrstream:detection-event:{detection_id}:{version}")),
        "org_id": org,
        "stream_id": UUID(detection_id),
        "stream_version": version,
        "occurred_at": now,
        "recorded_at": now,
        "actor": "processor",
        "kind": key.kind,
        "reason": key.reason,
        "subject_type": key.subject_type,
        "subject_id": key.subject_id,
        "period": key.period,
    }

"""`okrstream replay` keeps the readings that are not in the event store's log: those
produced straight to okr.kpi-readings.v1 (by integrations in either ingest mode, by ingest
itself with OKR_INGEST_MODE=kafka), including the ones the live processor applies while the
build runs. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from contracts.readings import reading_stream_id
from services.eventstore.store import EventStore
from services.processor.carry import Carrier
from services.processor.digest import content_hash
from services.processor.projector import Projector
from services.processor.records import Notice, ReadingRow, direct_reading
from services.processor.replay import main as replay_main
from services.processor.replay import rebuild
from services.projectionstore.db import Database
from services.projectionstore.meta import create_tables, ensure_schema, live_generation
from services.projectionstore.schema import Tables
from services.query.live import Feed
from services.query.store import ReadStore
from services.settings import Settings
from tests.unit.processor.builders import Log, synthetic


@contextlib.contextmanager
def stores(settings: Settings, log: Log) -> Iterator[tuple[EventStore, Database, Projector]]:
    """The log in the event store, and a projection store where a live processor applied
    its goal events."""
    store = EventStore.from_settings(settings)
    store.append([e for _, e in log.entries])
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    try:
        live = Projector(db)
        live.apply_goal_take(log.goal_items(), [], [])
        yield store, db, live
    finally:
        db.close()
        store.close()


def direct(kpi: UUID, value: float, observed_at: str, rid: str | None = None) -> ReadingRow:
    """A reading as the processor takes it from an integration's record."""
    body: dict[str, Any] = {
        "kpi_id": str(kpi),
        "org_id": "acme",
        "value": value,
        "observed_at": observed_at,
    }
    if rid is not None:
        body["reading_id"] = rid
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return direct_reading(orjson.dumps(body), now, lambda _: ("acme", "active"))


def settle(p: Projector, readings: Sequence[ReadingRow]) -> None:
    """Apply readings as the kpi agent does, then the pass over their notices."""
    p.apply_goal_take([], p.apply_readings(readings), [])
    while p.evaluate_pending(10**12, 1_000)[1]:
        pass


def live_hash(db: Database) -> dict[str, str]:
    with db.transaction(write=False) as cur:
        return content_hash(cur, Tables(live_generation(cur)))


def stored(db: Database, kpi: UUID) -> dict[str, tuple[float, str]]:
    with db.transaction(write=False) as cur:
        t = Tables(live_generation(cur))
        rows = cur.execute(
            f"SELECT reading_id, value, observed_at FROM {t.readings} WHERE kpi_id = ?",
            (str(kpi),),
        ).fetchall()
    return {str(r): (float(v), str(o)) for r, v, o in rows}


class Interleaved:
    """Carrier.mark, with the live processor applying `late` readings just before the
    build's first look at what arrived since its comparison of the whole table: what a
    processor consuming Kafka does while a replay runs. `at_swap` is the live generation's
    hash then (nothing else reaches it before the swap)."""

    def __init__(self, live: Projector, late: Sequence[ReadingRow]) -> None:
        self.live = live
        self.late = list(late)
        self.calls = 0
        self.at_swap: dict[str, str] = {}

    def __call__(self, carrier: Carrier, tx: Any = None) -> int | None:
        self.calls += 1
        if self.calls == 2:
            settle(self.live, self.late)
            self.at_swap = live_hash(self.live.db)
        return MARK(carrier, tx)


MARK = Carrier.mark
ARRIVED = Carrier.arrived


@pytest.mark.parametrize(
    ("late_count", "chunk"),
    [(1, 20_000), (7, 2)],
    ids=["caught-up-at-the-swap", "caught-up-before-the-swap"],
)
def test_replay_keeps_readings_sent_straight_to_kafka(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, late_count: int, chunk: int
) -> None:
    log = Log()
    _, kpis = synthetic(log, objectives=8, kpis=3, readings=60)
    with stores(settings, log) as (store, db, live):
        log_rows = log.reading_rows()
        settle(live, log_rows)
        first = log_rows[0]
        sent = [
            direct(kpis[0], 7.5, "2026-03-01T10:00:00Z", "k1"),
            direct(kpis[0], 9.0, "2026-03-01T10:00:00Z", "k2"),  # the same instant
            direct(kpis[1], 1.25, "2026-05-02T00:00:00Z"),  # its reading id derived
            # A reading id the log holds, sent again straight to Kafka with another time:
            # the log's reading was applied first, and stays.
            direct(UUID(first.kpi_id), 99.0, "2026-02-01T00:00:00Z", first.reading_id),
        ]
        settle(live, sent)
        before_late = stored(db, kpis[2])
        late = [
            direct(kpis[2], 4.0 + i, f"2026-06-0{1 + i}T12:00:00Z", f"late{i}")
            for i in range(late_count)
        ]
        interleaved = Interleaved(live, late)
        monkeypatch.setattr(Carrier, "mark", lambda c, tx=None: interleaved(c, tx))
        spans: list[tuple[int, bool]] = []  # (readings arrived, under the swap's lock)

        def arrived(c: Carrier, after: int, upto: int, tx: Any = None) -> int:
            spans.append((upto - after, tx is not None))
            return ARRIVED(c, after, upto, tx)

        monkeypatch.setattr(Carrier, "arrived", arrived)
        stats = rebuild(db, store, chunk=chunk)
        if late_count <= chunk:  # few: left for the swap
            assert spans == [(late_count, True)]
        else:  # more than a chunk: caught up before the lock is taken
            assert spans == [(late_count, False), (0, True)]

        assert stats.generation == 2
        assert stats.carried == 3 + late_count, "three sent straight to Kafka, and the late"
        assert stored(db, kpis[0])["k1"] == (7.5, "2026-03-01T10:00:00.000000Z")
        assert stored(db, kpis[0])["k2"] == (9.0, "2026-03-01T10:00:00.000000Z")
        assert sent[2].reading_id in stored(db, kpis[1])
        assert stored(db, kpis[2]) == {
            **before_late,
            **{r.reading_id: (r.value, r.observed_at) for r in late},
        }
        assert stored(db, UUID(first.kpi_id))[first.reading_id] == (first.value, first.observed_at)
        # Scores, KPI days, detections: the generation swapped in equals the one it
        # replaced, as it was at the swap.
        assert interleaved.at_swap, "the late readings were applied live during the build"
        assert live_hash(db) == interleaved.at_swap


def test_carried_readings_keep_their_event_ids(settings: Settings) -> None:
    """A carried reading's notices name it by the event id ingest gave it."""
    log = Log()
    objectives, kpis = synthetic(log, objectives=3, kpis=1, readings=0)
    with stores(settings, log) as (_store, db, live):
        reading = direct(kpis[0], 3.0, "2026-04-01T00:00:00Z", "only")
        settle(live, [reading])
        built = Projector(db, generation=2, lock=False, publish=False)
        with db.transaction() as cur:
            create_tables(cur, Tables(2))
        built.apply_goal_take(log.goal_items(), [], [])  # the log, as a replay builds it
        found: list[Notice] = []
        carrier = Carrier(built, Tables(1), found.extend, 100)
        assert carrier.missing() == 1
        assert carrier.missing() == 0, "once"
        assert {n.objective_id for n in found} == {str(o) for o in objectives}
        assert {n.event_id for n in found} == {str(reading_stream_id("acme", kpis[0], "only"))}
        assert {n.event_id for n in found} == {reading.event_id}


def test_replay_equals_the_live_generation_it_replaces(settings: Settings) -> None:
    """Readings from the log and straight from Kafka, in one live generation: a rebuild
    gives the same projection rows (the content hash of every table)."""
    log = Log()
    _, kpis = synthetic(log, objectives=12, kpis=4, readings=120)
    with stores(settings, log) as (store, db, live):
        sent = [
            direct(kpis[i % 4], float(i), f"2026-0{1 + i % 9}-1{i % 10}T0{i % 10}:00:00Z", f"d{i}")
            for i in range(40)
        ]
        settle(live, sent[:20] + log.reading_rows() + sent[20:])
        before = live_hash(db)
        stats = rebuild(db, store)
        assert stats.carried == 40
        assert live_hash(db) == before


def test_replay_carries_readings_whose_keys_clash(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 5-value reading_key nearly every reading's key is another's (stored with a
    NULL key): each is still carried, once."""
    monkeypatch.setattr(
        "services.projectionstore.readings.reading_key", lambda kpi, rid: hash((kpi, rid)) % 5
    )
    log = Log()
    _, kpis = synthetic(log, objectives=4, kpis=2, readings=20)
    with stores(settings, log) as (store, db, live):
        sent = [
            direct(kpis[i % 2], float(i), f"2026-03-{10 + i}T00:00:00Z", f"c{i}") for i in range(12)
        ]
        settle(live, log.reading_rows() + sent)
        before = live_hash(db)
        stats = rebuild(db, store, chunk=3)
        assert stats.carried == 12
        assert live_hash(db) == before
        with db.transaction(write=False) as cur:
            assert cur.execute("SELECT COUNT(*) FROM g2_readings").fetchone() == (32,)


@pytest.mark.parametrize("at_version", [None, 3], ids=["from-its-start", "mid-stream"])
def test_a_replay_parks_what_fails_and_builds_the_rest(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, at_version: int | None
) -> None:
    """An evaluation bug for one objective (from its first event, or from its third) does
    not stop a rebuild (a processor starting on a new schema would restart into it
    forever): that objective's events from there on are parked in the built generation,
    in every later chunk too, the rest is built, and once the fix runs, the parked events
    applied give what a clean replay gives."""
    log = Log()
    ids, _ = synthetic(log, objectives=5, kpis=2, readings=40)
    bad = str(ids[2])
    with stores(settings, log) as (store, db, _live):
        rebuild(db, store)
        clean = live_hash(db)
        recompute = Projector._recompute

        def buggy(
            self: Projector, tx: Any, objectives: Any, before: Any, after: Any, *args: Any
        ) -> None:
            if bad in objectives and (at_version is None or after[bad].version >= at_version):
                raise ValueError("an evaluation bug")
            recompute(self, tx, objectives, before, after, *args)

        monkeypatch.setattr(Projector, "_recompute", buggy)
        stats = rebuild(db, store, chunk=2)
        with db.transaction(write=False) as cur:
            parked = cur.execute(
                "SELECT stream_id, MIN(stream_version), COUNT(*) FROM g3_parked_events"
                " GROUP BY stream_id"
            ).fetchall()
            built = dict(cur.execute("SELECT objective_id, version FROM g3_objectives").fetchall())
        events_of_bad = sum(1 for _, e in log.entries if str(e.stream_id) == bad)
        assert stats.generation == 3
        ((stream, first, count),) = parked
        assert stream == bad
        assert first <= (at_version or 1)
        assert count == events_of_bad - first + 1, "every later one waits behind"
        assert set(built) == {str(o) for o in ids} - ({bad} if first == 1 else set())
        assert built.get(bad, 0) == first - 1
        monkeypatch.undo()
        assert Projector(db).retry_parked() == 1
        assert live_hash(db) == clean


@pytest.mark.parametrize(
    ("chunk", "readings", "deferred"),
    [(3, 5, True), (20_000, 5, True), (20_000, 0, False)],
    ids=["set-aside-in-the-build", "set-aside-in-one-chunk", "failing-first-at-the-swap"],
)
def test_a_replay_swaps_in_with_an_objective_that_fails(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, chunk: int, readings: int,
    deferred: bool,
) -> None:  # fmt: skip
    """A reading for an objective whose evaluation fails arrives just before the swap. Set
    aside in the build already (readings of the log were applied after it), its notice waits
    for a live pass; failing first at the swap (the log has no readings before), the swap is
    rolled back, the objective set aside without the lock, and the swap done again."""
    log = Log()
    ids, kpis = synthetic(log, objectives=3, kpis=1, readings=readings)
    bad = str(ids[1])
    with stores(settings, log) as (store, db, _live):
        recompute = Projector._recompute

        def buggy(
            self: Projector, tx: Any, objectives: Any, before: Any, after: Any, applied: Any,
            *args: Any,
        ) -> None:  # fmt: skip
            if bad in objectives and not applied.get(bad):  # its re-evaluations fail
                raise ValueError("an evaluation bug")
            recompute(self, tx, objectives, before, after, applied, *args)

        evaluate = Projector.evaluate_notices
        calls: list[int] = []

        def then_a_reading(self: Projector, notices: Any, limit: int) -> list[str]:
            found = evaluate(self, notices, limit)
            calls.append(len(notices))
            if len(calls) == 2:  # the last step before the swap
                n = len(log.entries)
                log.reading(kpis[0], 42.0, datetime(2026, 3, 3, tzinfo=UTC), "late")
                store.append([e for _, e in log.entries[n:]])
            return found

        monkeypatch.setattr(Projector, "_recompute", buggy)
        monkeypatch.setattr(Projector, "evaluate_notices", then_a_reading)
        stats = rebuild(db, store, chunk=chunk)
        assert stats.generation == 2
        with db.transaction(write=False) as cur:
            assert live_generation(cur) == 2
            aside = cur.execute("SELECT objective_id FROM g2_set_aside").fetchall()
            waiting = cur.execute("SELECT objective_id FROM g2_pending_notices").fetchall()
            late = cur.execute("SELECT 1 FROM g2_readings WHERE reading_id = 'late'").fetchall()
        assert aside == [(bad,)]
        assert waiting == ([(bad,)] if deferred else []), "left for a live pass, or set aside"
        assert late == [(1,)]


def _detections(db: Database) -> dict[str, tuple[Any, ...]]:
    with db.transaction(write=False) as cur:
        t = Tables(live_generation(cur))
        return {
            str(row[0]): tuple(row)
            for row in cur.execute(
                "SELECT detection_id, kind, reason, subject_id, detected_at, resolved_at,"
                f" version FROM {t.detections}"
            ).fetchall()
        }


def test_a_replay_keeps_what_the_detections_topic_told(settings: Settings) -> None:
    """A build evaluates at its own now and publishes nothing: on its own it forgot the
    episodes raised and resolved before, restarted versions at 1 (so the next change's
    event ids, derived from detection and version, repeated ones consumers had seen) and
    silently dropped an active detection that no longer holds. The swap reconciles."""
    log = Log()
    synthetic(log, objectives=6, kpis=2, readings=30)
    with stores(settings, log) as (store, db, live):
        settle(live, log.reading_rows())
        before = _detections(db)
        active = sorted(i for i, row in before.items() if row[5] is None)
        assert active, "the synthetic organisation has active detections"
        kept = active[0]
        gone, episode = str(uuid4()), str(uuid4())
        with db.transaction() as cur:
            t = Tables(live_generation(cur))
            cur.execute(f"UPDATE {t.detections} SET version = 5 WHERE detection_id = ?", (kept,))
            cur.execute(f"DELETE FROM {t.outbox}")
            cur.execute(
                f"INSERT INTO {t.outbox} (topic, key, value) VALUES ('okr.detections.v1', 'k',"
                " 'not published yet')"
            )
            columns = (
                "detection_id, org_id, kind, reason, subject_type, subject_id, period,"
                " detected_at, resolved_at, policy_version, evidence, version"
            )
            cur.executemany(
                f"INSERT INTO {t.detections} ({columns})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    # raised by a rule that no longer holds (a fix, say), and still active
                    (gone, "acme", "kpi_breach", "red", "kpi", str(uuid4()), "2026-01-05",
                     "2026-01-05T00:00:00.000000Z", None, "v1", '{"value": 1.0}', 1),
                    # an episode raised and resolved long ago
                    (episode, "acme", "over_reach", "forecast", "objective", str(uuid4()), "",
                     "2026-01-02T00:00:00.000000Z", "2026-01-03T00:00:00.000000Z", "v1",
                     '{"forecast": 0.5}', 2),
                ],
            )  # fmt: skip
        told = _detections(db)
        generation, _ = live.outbox()
        feed = Feed(ReadStore(db, settings.kafka_partitions))
        assert feed._read() == [], "a change feed that follows the live generation"
        rebuild(db, store)
        after = _detections(db)
        # The feed goes on in the new generation with what the swap told, nothing of the
        # build's own history (it started at the new generation's head: this was lost).
        told_live = [(kind, str(orjson.loads(body)["stream_id"])) for _, _, kind, _, body in
                     feed._read()]  # fmt: skip
        assert told_live == [("detection.resolved", gone)]
        # A publisher that read the replaced generation's outbox forgets nothing of the
        # new one's, which numbers its entries anew.
        live.published(generation, 10**9)
        new_generation, entries = live.outbox()
        assert new_generation == generation + 1
        outbox = [value.decode() for _, _, _, value in entries]
        live.published(new_generation, entries[-1][0])
        assert live.outbox() == (new_generation, [])
    assert after[episode] == told[episode], "an earlier episode is kept as it was"
    assert after[kept] == told[kept], "an active detection keeps its detected_at and version"
    assert after[gone][5] is not None
    assert after[gone][6] == 2
    assert outbox[0] == "not published yet", "the live generation's unpublished events go on"
    resolved = [orjson.loads(v) for v in outbox[1:]]
    assert [(e["type"], e["stream_id"], e["stream_version"]) for e in resolved] == [
        ("detection.resolved", gone, 2)
    ]
    assert {i for i, row in after.items() if row[5] is None} == set(active)


def test_replay_without_an_event_store_refuses_and_keeps_the_projections(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed where there is no event store (a mistyped OKR_DATA_DIR, only the projections
    copied), `okrstream replay` opened an empty one, swapped empty tables in for the live
    ones and exited 0."""
    log = Log()
    synthetic(log, objectives=3, kpis=2, readings=10)
    db = Database.from_settings(settings, settings.projections_db_path)
    ensure_schema(db)
    try:
        live = Projector(db)
        live.apply_goal_take(log.goal_items(), live.apply_readings(log.reading_rows()), [])
        before = live_hash(db)
        assert replay_main(settings) == 1
        assert "no event store" in capsys.readouterr().err
        assert live_hash(db) == before
        with db.transaction(write=False) as cur:
            assert live_generation(cur) == 1
    finally:
        db.close()
    assert not settings.events_db_path.exists(), "no empty store was created"

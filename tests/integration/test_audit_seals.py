"""okrstream audit verify/export over a real store (SQLite and PostgreSQL), tampered with SQL:
what a stream's own chain cannot show (its newest event or the whole stream removed, a row
relabelled) and what an upcast must not fake (an untouched old-schema event)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
import pytest

import events
from events.hashing import stored_hash
from services.audit.main import check_log, export, main, verify
from services.eventstore import ConcurrencyError, EventStore
from services.eventstore.store import SEALS_TABLE
from services.settings import Settings
from tests.support.samples import sample, sealed_chain

pytestmark = pytest.mark.integration

HEAD = re.compile(r"head (\d+:[0-9a-f]{64})")


def _readings(n: int) -> list[events.Event]:
    return [
        events.seal(sample("reading.recorded", reading_id=f"r-{uuid4()}"), None) for _ in range(n)
    ]


@dataclass
class Seeded:
    settings: Settings
    objective: list[events.Event]
    readings: list[events.Event]

    def store(self) -> EventStore:
        return EventStore.from_settings(self.settings)

    @contextmanager
    def sql(self) -> Iterator[Callable[..., Any]]:
        """Run statements on the store's database behind its back (`?` placeholders)."""
        if self.settings.uses_postgres:
            with psycopg.connect(self.settings.postgres.conninfo(), autocommit=True) as conn:

                def run(q: str, *p: object) -> list[Any]:
                    cursor = conn.execute(q.replace("?", "%s"), p)  # type: ignore[arg-type]
                    return cursor.fetchall() if cursor.description else []

                yield run
        else:
            conn = sqlite3.connect(self.settings.events_db_path)
            try:
                yield lambda q, *p: conn.execute(q, p).fetchall()
                conn.commit()
            finally:
                conn.close()

    def key(self, stream_id: UUID) -> object:
        """A stream id as the events table's column holds it."""
        return stream_id if self.settings.uses_postgres else stream_id.hex


def _point_at(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's settings (read from the environment) reach `settings`' store."""
    monkeypatch.setenv("OKR_DATA_DIR", str(settings.data_dir))
    if settings.database_url is None:
        monkeypatch.delenv("OKR_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("OKR_DATABASE_URL", settings.database_url)


@pytest.fixture
def seeded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """An objective (3 events), a KPI (2) and 5 readings (one-event streams), written the
    way the services write them: commands through append, readings through append_new."""
    _point_at(settings, monkeypatch)
    objective = sealed_chain(["objective.drafted", "key_result.added", "key_result.checked_in"])
    readings = _readings(5)
    store = EventStore.from_settings(settings)
    try:
        store.append(objective)
        store.append(sealed_chain(["kpi.defined", "kpi.retargeted"]))
        store.append_new(readings)
    finally:
        store.close()
    return Seeded(settings, objective, readings)


def _verified(capsys: pytest.CaptureFixture[str], expect_head: str | None = None) -> str:
    code = verify(expect_head)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _broken(capsys: pytest.CaptureFixture[str], expect_head: str | None = None) -> str:
    code = verify(expect_head)
    _out, err = capsys.readouterr()
    assert code == 1
    assert "BROKEN" in err
    return err


def test_an_intact_store_verifies_and_its_head_checks_later(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _verified(capsys)
    assert "7 streams verified" in out
    assert "10 events verified against 3 seals" in out
    assert "not anchored" not in out
    assert "not sealed" not in out
    found = HEAD.search(out)
    assert found is not None
    head = found.group(1)
    assert head.startswith("10:")
    assert "expected head 10 holds" in _verified(capsys, head)
    assert main(["verify", "--expect-head", head]) == 0  # python -m services.audit.main
    forged = head[:-1] + ("1" if head.endswith("0") else "0")
    assert main(["verify", "--expect-head", forged]) == 1
    assert main(["verify", "--expect-head", "10"]) == 2
    capsys.readouterr()
    store = seeded.store()
    try:
        store.append_new(_readings(3))  # later writes leave an earlier head valid
    finally:
        store.close()
    assert "expected head 10 holds" in _verified(capsys, head)


def test_removing_a_streams_newest_event_is_detected(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = seeded.objective[0].stream_id
    with seeded.sql() as sql:
        sql(
            "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 3",
            seeded.key(stream),
        )
    err = _broken(capsys)
    assert "position 3 is missing" in err


def test_removing_a_whole_stream_is_detected(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    with seeded.sql() as sql:
        sql(
            "DELETE FROM stored_events WHERE originator_id = ?",
            seeded.key(seeded.readings[2].stream_id),
        )
    err = _broken(capsys)
    assert "seal at position 10 does not match the log" in err


def test_a_row_relabelled_with_another_version_is_detected(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = seeded.objective[0].stream_id
    with seeded.sql() as sql:
        sql(
            "UPDATE stored_events SET originator_version = 7 "
            "WHERE originator_id = ? AND originator_version = 3",
            seeded.key(stream),
        )
    err = _broken(capsys)
    assert f"stream {stream} version 7" in err
    assert "stored as version 7 but its JSON says version 3" in err


def test_a_rehashed_forgery_of_a_reading_breaks_its_seal(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A one-event stream re-hashed by the forger keeps its own chain: the seal shows it."""
    reading = seeded.readings[1]
    data = {**events.to_json_dict(reading), "value": 1_000_000.0}
    data["hash"] = stored_hash(data)
    with seeded.sql() as sql:
        sql(
            "UPDATE stored_events SET state = ? WHERE originator_id = ?",
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
            seeded.key(reading.stream_id),
        )
    err = _broken(capsys)
    assert "seal at position 10 does not match the log" in err


def test_newest_events_removed_with_their_seals_fail_against_a_noted_head(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    found = HEAD.search(_verified(capsys))
    assert found is not None
    earlier = found.group(1)
    store = seeded.store()
    try:
        store.append_new(_readings(4))  # positions 11-14
    finally:
        store.close()
    found = HEAD.search(_verified(capsys))
    assert found is not None
    noted = found.group(1)
    assert noted.startswith("14:")
    with seeded.sql() as sql:
        sql(
            "DELETE FROM stored_events WHERE originator_id IN "
            f"(SELECT originator_id FROM stored_events ORDER BY {_position(seeded)} DESC LIMIT 2)"
        )
        sql(f"DELETE FROM {SEALS_TABLE} WHERE position > 10")
    # the store alone cannot show it (the limit the head is for)...
    assert "head 10:" in _verified(capsys)
    assert "expected head 10 holds" in _verified(capsys, earlier)
    # ...the head noted before can
    err = _broken(capsys, noted)
    assert "expected head 14: no seal at that position" in err


def _position(seeded: Seeded) -> str:
    return "notification_id" if seeded.settings.uses_postgres else "rowid"


def test_an_untouched_old_schema_event_verifies_and_exports_as_stored(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A v1 key_result.check_in (alias type, confidence in percent), sealed by the same rule
    over the form it was stored in: verify must not call it tampered, and export must print
    that form so that an auditor's own re-hash holds."""
    objective = sealed_chain(["objective.drafted", "key_result.added"])
    data = events.to_json_dict(
        sample("key_result.checked_in", stream_id=objective[0].stream_id, version=3)
    )
    data.update(
        type="key_result.check_in", schema_version=1, confidence=80.0, prev_hash=objective[1].hash
    )
    data.pop("hash")
    unsealed = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    data["hash"] = hashlib.sha256(unsealed).hexdigest()
    store = seeded.store()
    try:
        store.append(objective)
        store.append_new_encoded(
            [
                (
                    objective[0].stream_id,
                    3,
                    "key_result.check_in",
                    orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
                )
            ]
        )
    finally:
        store.close()
    _verified(capsys)

    assert export(str(objective[0].stream_id)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    old = orjson.loads(lines[2])
    assert old["schema_version"] == 1
    assert old["type"] == "key_result.check_in"
    assert old["confidence"] == 80.0
    for line in lines:  # the auditor's own re-hash of every exported line
        exported = orjson.loads(line)
        rest = {k: v for k, v in exported.items() if k != "hash"}
        assert (
            hashlib.sha256(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)).hexdigest()
            == (exported["hash"])
        )
    assert [orjson.loads(line)["prev_hash"] for line in lines[1:]] == [
        orjson.loads(line)["hash"] for line in lines[:-1]
    ]


def test_a_store_of_the_previous_release_keeps_verifying(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written without seals (the table dropped: what an older release leaves), the store
    verifies, saying what is not anchored; the next writes seal from there on."""
    with seeded.sql() as sql:
        sql(f"DROP TABLE {SEALS_TABLE}")
    out = _verified(capsys)
    assert "7 streams verified" in out
    assert "the log has no seals" in out
    assert "not anchored before position 11" in out
    store = seeded.store()
    try:
        store.append_new(_readings(2))
        store.append(sealed_chain(["objective.drafted"]))
    finally:
        store.close()
    out = _verified(capsys)
    assert "not anchored before position 11: 10 events predate the log seals" in out
    assert "3 events verified against 2 seals" in out
    with seeded.sql() as sql:  # the sealed part is covered from there on
        sql(
            "DELETE FROM stored_events WHERE originator_id = ?",
            seeded.key(seeded.readings[0].stream_id),
        )
    _verified(capsys)  # a legacy event: only its stream chain covers it, and cannot show it
    with seeded.sql() as sql:
        rows = sql(f"SELECT {_position(seeded)} FROM stored_events ORDER BY 1 DESC LIMIT 1")
        sql(f"DELETE FROM stored_events WHERE {_position(seeded)} = ?", rows[0][0])
    assert "is missing" in _broken(capsys)


def test_gaps_in_positions_are_not_taken_for_removals(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL never reuses a sequence value: a duplicate skipped by ON CONFLICT or an
    append rolled back leaves a gap in the positions. The seals chain what exists."""
    store = seeded.store()
    try:
        fresh = _readings(2)
        store.append_new([seeded.readings[0], fresh[0], seeded.readings[1], fresh[1]])
        taken = events.seal(
            sample("objective.revised", stream_id=seeded.objective[0].stream_id, version=3),
            seeded.objective[1].hash,
        )
        with pytest.raises(ConcurrencyError):
            store.append([*sealed_chain(["objective.drafted"]), taken])
        store.append(sealed_chain(["objective.drafted", "objective.revised"]))
        positions = [n.position for n in store.notifications(0, 100)]
        report = check_log(store)
    finally:
        store.close()
    if seeded.settings.uses_postgres:
        assert positions[-1] > len(positions)  # the gaps this test is about
    assert report.broken is None
    assert report.unsealed == 0
    assert report.entries == len(positions)
    _verified(capsys)


def test_concurrent_writers_leave_every_event_sealed(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readings batches and command appends from two store instances (as two processes),
    at once: every write seals what committed before it, so nothing is left unsealed."""
    stores = [seeded.store(), seeded.store()]
    errors: list[BaseException] = []

    def readings(store: EventStore) -> None:
        try:
            for _ in range(10):
                store.append_new(_readings(20))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def commands(store: EventStore) -> None:
        try:
            for _ in range(10):
                store.append(sealed_chain(["objective.drafted", "objective.revised"]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(store,))
        for store in stores
        for work in (readings, readings, commands)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        report = check_log(stores[0])
    finally:
        for store in stores:
            store.close()
    assert report.broken is None
    assert report.unsealed == 0
    assert report.entries == 10 + 2 * 2 * 10 * 20 + 2 * 10 * 2
    _verified(capsys)


def test_a_new_store_anchors_every_entry_whichever_writer_seals_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command's append commits its events, then seals in a transaction of its own; a
    readings batch of another process may seal first. On a store that started empty, the
    command's events are still anchored (the genesis seal): before, the first seal's base
    left them below it for good."""
    first, second = EventStore.from_settings(settings), EventStore.from_settings(settings)
    try:
        monkeypatch.setattr(first, "_seal_appended", lambda positions: None)  # sealed late
        first.append(sealed_chain(["objective.drafted", "objective.revised"]))
        second.append_new(_readings(3))
        report = check_log(second)
    finally:
        first.close()
        second.close()
    assert report.broken is None
    assert (report.base, report.unanchored, report.unsealed) == (0, 0, 0)
    assert report.entries == 5


def _tables(settings: Settings) -> list[str]:
    """The tables in the settings' PostgreSQL schema."""
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (settings.postgres.schema,),
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_no_store_where_the_settings_point_fails_and_creates_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped OKR_DATA_DIR (or a database okrstream never wrote): verify and export say
    there is no event store and exit 1; they do not create an empty one and call it intact."""
    _point_at(settings, monkeypatch)
    assert verify() == 1
    out, err = capsys.readouterr()
    assert "there is no event store" in err
    assert "verified" not in out
    assert export(str(uuid4())) == 1
    assert "there is no event store" in capsys.readouterr().err
    if settings.uses_postgres:
        assert "OKR_DATABASE_URL" in err
        assert _tables(settings) == []
    else:
        assert "OKR_DATA_DIR" in err
        assert not settings.data_dir.exists()


def test_a_file_that_is_no_event_store_is_not_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An events file without the events table (empty, or some other database): exit 1,
    one line on stderr, and the file is left as it was."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    settings.events_db_path.touch()
    _point_at(settings, monkeypatch)
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", "verify"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert "is not an event store" in done.stderr
    assert done.stdout == ""
    assert settings.events_db_path.stat().st_size == 0


def test_a_new_store_is_reported_empty_not_as_written_before_seals(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    EventStore.from_settings(settings).close()  # what `okrstream up` leaves before any write
    _point_at(settings, monkeypatch)
    out = _verified(capsys)
    assert "0 streams verified" in out
    assert "the log is empty" in out
    assert "before log seals" not in out
    assert "not anchored" not in out


def test_the_readme_re_hash_recipe_checks_every_exported_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """README's shell recipe, run as written, re-derives each line's hash, also for a line
    whose numbers and text a general JSON encoder writes differently (1e-7, non-ASCII)."""
    _point_at(settings, monkeypatch)
    stream = uuid4()
    drafted = events.seal(
        sample("objective.drafted", stream_id=stream, title="Délai ≤ 2 jours ✓"), None
    )
    checked = events.seal(
        sample("key_result.checked_in", stream_id=stream, version=2, value=1e-7), drafted.hash
    )
    store = EventStore.from_settings(settings)
    try:
        store.append([drafted, checked])
    finally:
        store.close()
    assert export(str(stream)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    # What a general JSON encoder writes otherwise:
    assert "1e-7" in lines[1]
    assert "✓" in lines[0]
    exported = tmp_path / "export.jsonl"
    exported.write_text("\n".join(lines) + "\n", encoding="utf-8")

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"With standard tools:\n\n```bash\n(.*?)```", readme, re.S)
    assert block is not None, "README lost its re-hash recipe"
    command = block.group(1)
    assert ".venv/bin/okrstream audit export --objective ID" in command
    script = command.replace(".venv/bin/okrstream audit export --objective ID", f"cat {exported}")
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    sums = [line.split()[0] for line in ran.stdout.splitlines()]
    assert sums == [orjson.loads(line)["hash"] for line in lines]
    assert [drafted.hash, checked.hash] == sums

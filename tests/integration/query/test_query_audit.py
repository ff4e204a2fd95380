"""okrstream audit verify/export against a real SQLite event store, tampered on disk."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from uuid import uuid4

import pytest

import events
from services.audit.main import export, verify
from services.eventstore import EventStore
from services.settings import Settings
from tests.support.samples import sealed_chain

pytestmark = pytest.mark.integration


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[events.Event]]:
    data = tmp_path / "data"
    monkeypatch.setenv("OKR_DATA_DIR", str(data))
    monkeypatch.delenv("OKR_DATABASE_URL", raising=False)
    store = EventStore.from_settings(Settings(data_dir=data))
    objective = sealed_chain(["objective.drafted", "key_result.added", "key_result.checked_in"])
    kpi = sealed_chain(["kpi.defined", "kpi.retargeted"])
    store.append(objective)
    store.append(kpi)
    store.close()
    return data, objective


def test_verify_passes_on_an_intact_store(store_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    assert verify() == 0
    assert "2 streams verified" in capsys.readouterr().out


def test_verify_names_the_first_broken_link_after_tampering(store_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    data, objective = store_dir
    db = data / "events.sqlite"
    with sqlite3.connect(db) as conn:  # fold the WAL into the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = db.read_bytes()
    needle = b"Churn down"  # the key result's title, in event version 2
    assert raw.count(needle) == 1
    db.write_bytes(raw.replace(needle, b"Churn dowN"))
    assert verify() == 1
    err = capsys.readouterr().err
    assert "BROKEN" in err
    assert f"stream {objective[0].stream_id} version 2" in err
    assert "hash does not match" in err


def test_export_prints_every_event_as_a_json_line(store_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    _data, objective = store_dir
    assert export(str(objective[0].stream_id)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert [p["stream_version"] for p in parsed] == [1, 2, 3]
    assert parsed[1]["prev_hash"] == parsed[0]["hash"]
    assert {"event_id", "org_id", "occurred_at", "recorded_at", "type"} <= parsed[0].keys()
    assert events.verify_chain([events.decode(line) for line in lines]) is None


def test_export_of_an_unknown_objective_fails(store_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    assert export(str(uuid4())) == 1
    assert "no objective" in capsys.readouterr().err
    assert export("nope") == 1

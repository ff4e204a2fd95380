"""The checked-in JSON Schemas of contracts/ must match the code."""

from __future__ import annotations

import json

import events
from services.cli.schemas import SCHEMA_DIR, documents, drift


def test_checked_in_schemas_match_the_code() -> None:
    assert drift() == [], "run `make schemas` and commit contracts/schemas/"


def test_every_event_type_has_a_schema_with_its_stable_name() -> None:
    for name in events.EVENT_TYPES:
        doc = json.loads((SCHEMA_DIR / f"event.{name}.json").read_text())
        assert doc["properties"]["type"]["const"] == name


def test_drift_is_detected(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import services.cli.schemas as schemas

    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path)
    assert schemas.write() == 0
    assert schemas.drift() == []
    target = tmp_path / "event.objective.drafted.json"
    doc = json.loads(target.read_text())
    doc["properties"].pop("title")
    target.write_text(json.dumps(doc))
    assert schemas.drift() == ["event.objective.drafted.json"]
    assert len(documents()) == len(list(tmp_path.glob("*.json")))

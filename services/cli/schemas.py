"""Generate the checked-in JSON Schemas of contracts/ from the code, or check for drift.

`contracts/` may not import `events/`, so the generator lives here, at the edge.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import contracts
import events
from contracts.readings import KafkaReading, ReadingIn, ReadingsAccepted
from contracts.topics import ALL_TOPICS

SCHEMA_DIR = Path(contracts.__file__).parent / "schemas"


def documents() -> dict[str, dict[str, Any]]:
    """file name → JSON Schema document, for every message of the contract."""
    docs: dict[str, dict[str, Any]] = {}
    for cls in events.EVENT_CLASSES:
        docs[f"event.{cls.type_name()}.json"] = cls.model_json_schema(mode="serialization")
    docs["reading.http.json"] = ReadingIn.model_json_schema()
    docs["reading.kafka.json"] = KafkaReading.model_json_schema()
    docs["readings.accepted.json"] = ReadingsAccepted.model_json_schema()
    docs["topics.json"] = {
        "topics": [
            {
                "name": t.name,
                "key": t.key,
                "value": t.value,
                "configs": t.configs,
                "internal": t.internal,
            }
            for t in ALL_TOPICS
        ]
    }
    return docs


def _render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def drift() -> list[str]:
    """Names of checked-in schema files that differ from the code (or are missing/extra)."""
    docs = documents()
    problems = [
        name
        for name, doc in docs.items()
        if not (SCHEMA_DIR / name).exists() or (SCHEMA_DIR / name).read_text() != _render(doc)
    ]
    extra = [p.name for p in SCHEMA_DIR.glob("*.json") if p.name not in docs]
    return sorted(problems + [f"{name} (no longer generated)" for name in extra])


def write() -> int:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    docs = documents()
    for old in SCHEMA_DIR.glob("*.json"):
        if old.name not in docs:
            old.unlink()
    for name, doc in docs.items():
        (SCHEMA_DIR / name).write_text(_render(doc))
    print(f"wrote {len(docs)} schemas to {SCHEMA_DIR}")
    return 0


def check() -> int:
    problems = drift()
    for name in problems:
        print(f"drift: {name}", file=sys.stderr)
    if problems:
        print("run `make schemas` and commit the result", file=sys.stderr)
        return 1
    print(f"the checked-in schemas match the code ({SCHEMA_DIR})")
    return 0

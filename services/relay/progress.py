"""What the relay has published, kept durably (a table in the event store's engine).

`position`: every entry at or below it is in Kafka (written after the flush succeeded).
`offsets`: the end offset the broker acknowledged per topic partition; a broker whose end
offsets fall below them has lost its data (the embedded broker restarted empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from services.projectionstore.db import Database
from services.settings import Settings

DDL = (
    "CREATE TABLE IF NOT EXISTS relay_progress ("
    " name TEXT PRIMARY KEY, position BIGINT NOT NULL, offsets TEXT NOT NULL)"
)


@dataclass(slots=True)
class Progress:
    position: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" → end offset


class ProgressStore:
    def __init__(self, db: Database, name: str = "relay") -> None:
        self.db = db
        self.name = name
        with db.transaction() as cur:
            cur.execute(DDL)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProgressStore:
        return cls(Database.from_settings(settings, settings.data_dir / "relay.sqlite"))

    def load(self) -> Progress:
        with self.db.transaction(write=False) as cur:
            row = cur.execute(
                "SELECT position, offsets FROM relay_progress WHERE name = ?", (self.name,)
            ).fetchone()
        if row is None:
            return Progress()
        return Progress(int(row[0]), {str(k): int(v) for k, v in orjson.loads(row[1]).items()})

    def save(self, progress: Progress) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO relay_progress (name, position, offsets) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                "offsets = excluded.offsets",
                (self.name, progress.position, orjson.dumps(progress.offsets).decode()),
            )

    def close(self) -> None:
        self.db.close()

"""The processor against a real broker and real stores, fed in the relay's wire format."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.broker.embedded import EmbeddedBroker
from services.settings import Settings
from tests.integration.processor.harness import (
    ROOT,
    ProcessorProcess,
    produce,
    projection_db,
    relay_records,
    store_events,
    wait_for_position,
)
from tests.unit.processor.builders import Log, worked_example

pytestmark = pytest.mark.integration


def test_worked_example_end_to_end(
    settings: Settings, fresh_broker: EmbeddedBroker, unique_group: str, tmp_path: Path
) -> None:
    log = Log()
    ids = worked_example(log)
    entries = store_events(settings, [e for _, e in log.entries])
    last = entries[-1][0]
    produce(fresh_broker.bootstrap, relay_records(entries), last, 4)
    proc = ProcessorProcess(settings, fresh_broker.bootstrap, unique_group, tmp_path / "p.log")
    proc.start()
    db = projection_db(settings)
    try:
        wait_for_position(db, last, 4, procs=[proc])
        with db.transaction(write=False) as cur:
            (gen,) = cur.execute(
                "SELECT value FROM projection_meta WHERE key = 'generation'"
            ).fetchone() or ("1",)
            row = cur.execute(
                f"SELECT score, progress, rollup_score, zone FROM g{gen}_objectives"
                " WHERE objective_id = ?",
                (str(ids["objective"]),),
            ).fetchone()
            kr = cur.execute(
                f"SELECT current, score FROM g{gen}_key_results WHERE kr_id = ?",
                (str(ids["kr_c"]),),
            ).fetchone()
            found = cur.execute(
                f"SELECT kind, reason FROM g{gen}_detections WHERE subject_id = ?"
                " AND resolved_at IS NULL",
                (str(ids["objective"]),),
            ).fetchall()
            readings = cur.execute(f"SELECT COUNT(*) FROM g{gen}_readings").fetchone()
        assert row is not None
        assert row[0] == pytest.approx(0.65)
        assert row[1] == pytest.approx(0.65)
        assert row[2] == pytest.approx(0.65)
        assert row[3] == "commit"
        assert kr == (6.0, 0.6)
        # The period ended (2026-03-31) with 0.65 < 0.7: over-reach, final.
        assert ("over_reach", "final") in found
        assert readings == (2,)
        # faust's own directory lies under the data directory, not the working directory.
        assert (settings.data_dir / "faust" / unique_group).is_dir()
        assert not (ROOT / f"{unique_group}-data").exists()
    finally:
        proc.stop()
        db.close()

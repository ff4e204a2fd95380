"""Read-your-writes: the event-store position up to which the projections are complete.

The relay sends a watermark ("everything ≤ P is published") to every partition of the
goal-events and kpi-readings topics. The processor stores, in the same transaction as the
data, the last watermark it applied per (stage, topic, partition, source partition):

- stage "goal":    okr.goal-events.v1 partition p          (source_part = -1)
- stage "kpi":     okr.kpi-readings.v1 partition p          (source_part = -1)
- stage "measure": okr.kr-measurements.v1 partition q, forwarded from kpi partition p

Everything at or below the minimum over all expected rows is in the projections.
"""

from __future__ import annotations

from contracts.topics import GOAL_EVENTS, KPI_READINGS, KR_MEASUREMENTS
from services.projectionstore.db import Cursor
from services.projectionstore.schema import Tables


def expected_rows(partitions: int) -> set[tuple[str, str, int, int]]:
    """Every (stage, topic, part, source_part) that must report before a position counts."""
    rows = {("goal", GOAL_EVENTS.name, p, -1) for p in range(partitions)}
    rows |= {("kpi", KPI_READINGS.name, p, -1) for p in range(partitions)}
    rows |= {
        ("measure", KR_MEASUREMENTS.name, q, p)
        for q in range(partitions)
        for p in range(partitions)
    }
    return rows


def applied_position(cursor: Cursor, tables: Tables, partitions: int) -> int:
    """The processor's applied position: 0 until every expected row has reported."""
    found = {
        (str(stage), str(topic), int(part), int(src)): int(pos)
        for stage, topic, part, src, pos in cursor.execute(
            f"SELECT stage, topic, part, source_part, position FROM {tables.watermarks}"
        ).fetchall()
    }
    expected = expected_rows(partitions)
    if not expected <= found.keys():
        return 0
    return min(found[row] for row in expected)

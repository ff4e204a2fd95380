"""The detections a replay's swap carries from the live generation into the built one.

A build evaluates every objective and KPI at its own now, without publishing: on its own it
would forget what the live generation recorded and okr.detections.v1 carried (episodes
raised and resolved before, when an active detection was raised) and number every detection
from version 1 again, so the events of its next change would reuse event ids (derived from
detection and version) that consumers have seen. At the swap, under the writers' lock, each
detection id is reconciled, the live row being what the topic has told:

| live      | built            | the built generation gets                                       |
|-----------|------------------|-----------------------------------------------------------------|
| resolved  | none or resolved | the live row: an earlier episode                                |
| active    | active           | the live row (its detected_at, version and evidence)            |
| active    | none or resolved | the live row resolved now, version + 1, and detection.resolved  |
| resolved  | active           | the built episode at version + 1, and detection.raised          |
| none      | active           | the built row at version 1, and detection.raised                |
| none      | resolved         | nothing: an episode of the build alone, never told              |

The events go to the built generation's outbox, with the live one's still unpublished
entries before them, so the live processor publishes them once the built generation is live.
"""

from __future__ import annotations

from typing import Any

import orjson

import events
from projections import detections as rules
from services.processor.projector import Projector, Tx, detection_fields
from services.projectionstore.meta import existing_tables
from services.projectionstore.schema import Tables

COLUMNS = (
    "detection_id, org_id, kind, reason, subject_type, subject_id, period, detected_at,"
    " resolved_at, policy_version, evidence, version"
)


def _rows(tx: Tx, table: str) -> dict[str, tuple[Any, ...]]:
    return {
        str(row[0]): tuple(row)
        for row in tx.cur.execute(f"SELECT {COLUMNS} FROM {table}").fetchall()
    }


def _key(row: tuple[Any, ...]) -> rules.DetectionKey:
    return rules.DetectionKey(row[2], row[3], row[4], row[5], row[6])


def carry_detections(p: Projector, tx: Tx, live: Tables, built: Tables) -> int:
    """Reconcile `built`'s detections with `live`'s (see the module docstring) in `tx`;
    return how many events it emitted."""
    if live.generation == built.generation:
        return 0
    found = existing_tables(tx.cur, [live.detections, live.outbox])
    if live.outbox in found:
        tx.cur.execute(
            f"INSERT INTO {built.outbox} (topic, key, value) SELECT topic, key, value"
            f" FROM {live.outbox} ORDER BY seq"
        )
    if live.detections not in found:
        return 0
    told = _rows(tx, live.detections)
    mine = _rows(tx, built.detections)
    rows: list[tuple[Any, ...]] = []
    emitted: list[tuple[str, str, events.Event]] = []
    for detection_id in sorted(told.keys() | mine.keys()):
        old, new = told.get(detection_id), mine.get(detection_id)
        old_active = old is not None and old[8] is None
        new_active = new is not None and new[8] is None
        if old is not None and (old_active == new_active or (not old_active and new is None)):
            rows.append(old)  # an earlier episode, or the one the topic told still holds
        elif old is not None and old_active:  # it holds no more
            version = int(old[11]) + 1
            rows.append((*old[:8], tx.now_text, *old[9:11], version))
            emitted.append(_event(tx, old, version, raised=False))
        elif new is not None and new_active:  # raised anew (version 1 when never told)
            version = 1 if old is None else int(old[11]) + 1
            rows.append((*new[:7], tx.now_text, None, *new[9:11], version))
            emitted.append(_event(tx, new, version, raised=True))
        # else: none live and resolved in the build: never told, nothing to keep
    tx.cur.execute(f"DELETE FROM {built.detections}")
    tx.cur.executemany(
        f"INSERT INTO {built.detections} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    p.emit_detections(tx, emitted, publish=True)
    return len(emitted)


def _event(tx: Tx, row: tuple[Any, ...], version: int, *, raised: bool) -> tuple[str, str, Any]:
    """(org, subject id, detection.raised or detection.resolved) of a detection row at
    `version`, now."""
    org, key = str(row[1]), _key(row)
    fields = detection_fields(org, key, str(row[0]), version, tx.now)
    evidence, policy = orjson.loads(row[10]), str(row[9])
    event: events.Event
    if raised:
        event = events.DetectionRaised(
            **fields, detected_at=tx.now, policy_version=policy, evidence=evidence
        )
    else:
        event = events.DetectionResolved(
            **fields, resolved_at=tx.now, policy_version=policy, evidence=evidence
        )
    return org, key.subject_id, event

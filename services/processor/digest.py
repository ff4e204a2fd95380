"""A content hash of a generation's projection tables, to compare two builds (a live run
after crashes against a clean replay, a redelivered batch against the first delivery)."""

from __future__ import annotations

import hashlib

import orjson

from services.projectionstore.db import Cursor
from services.projectionstore.meta import table_columns
from services.projectionstore.schema import Tables

# Columns that depend on when (wall clock) or in which interleaving the rows were written,
# not on which events were applied.
VOLATILE: dict[str, set[str]] = {
    "objectives": {"evaluated_at", "expected", "health", "status", "forecast"},
    "detections": {"detected_at", "resolved_at", "version", "evidence"},
    # Which of two readings whose keys clash keeps the key depends on which came first, and
    # the arrival order (PostgreSQL's seq) on how they were batched.
    "readings": {"reading_key", "seq"},
    "kpis": {"days_version"},  # a cache-validation counter: how many batches changed days
}
# Feeds and bookkeeping, excluded from the strict hash too: the change feed and outbox
# (a wall-clock `at`, serial numbers), the watermarks (how far each partition got), the
# re-evaluations still pending (what was in flight, or waits for its day), the
# objectives set aside and the goal events parked.
FEEDS = {
    "changes",
    "outbox",
    "watermarks",
    "pending_notices",
    "pending_marks",
    "later_notices",
    "set_aside",
    "parked_events",
}
# Tables whose rows depend on the interleaving of goal events and readings (a history row
# per change as it was observed): compared only in `strict` mode.
ORDER_DEPENDENT = {"score_history"}


def content_hash(cur: Cursor, tables: Tables, *, strict: bool = False) -> dict[str, str]:
    """sha256 per table over its rows (sorted), leaving out feeds, and unless `strict`, the
    volatile columns and the order-dependent tables."""
    found: dict[str, str] = {}
    prefix = f"g{tables.generation}_"
    for name in tables.all():
        short = name.removeprefix(prefix)
        if short in FEEDS or (not strict and short in ORDER_DEPENDENT):
            continue
        rows = cur.execute(f"SELECT * FROM {name}").fetchall()
        columns = table_columns(cur, name)
        skip = set() if strict else VOLATILE.get(short, set())
        if short == "detections" and not strict:
            # Which detections were raised and resolved on the way depends on the
            # interleaving; the active ones do not.
            resolved = columns.index("resolved_at")
            rows = [row for row in rows if row[resolved] is None]
        keep = [i for i, c in enumerate(columns) if c not in skip]
        canonical = sorted(orjson.dumps([row[i] for i in keep]) for row in rows)
        digest = hashlib.sha256(b"\n".join(canonical)).hexdigest()
        found[short] = f"{len(rows)}:{digest}"
    return found

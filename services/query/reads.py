"""The reads of API.md over one read transaction, always restricted to one organisation.

Lists page by keyset: the opaque cursor is the base64 of the last item's sort key.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

import events
from projections.kpi import (
    Interval,
    KpiTarget,
    bucket_end,
    bucket_judged_at,
    bucket_start,
    kpi_status,
    kpi_targets,
    target_in_force,
    target_now,
)
from services.http.problems import Problem
from services.projectionstore.db import Cursor
from services.projectionstore.schema import Tables, iso, parse_iso
from services.query.store import ReadStore
from services.query.views import (
    DAY_COLUMNS,
    DETECTION_COLUMNS,
    KPI_COLUMNS,
    KR_COLUMNS,
    OBJECTIVE_COLUMNS,
    bucket_of_day,
    current_bucket_days,
    detection_view,
    kpi_view,
    merge_days,
    objective_view,
)

Page = dict[str, Any]


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


# What each element of a cursor's sort key may be. A cursor is opaque but not trusted: an
# element of another type or out of range is refused here, before it reaches SQL.
KeyPart = Callable[[Any], bool]
MAX_KEY_TEXT = 200
INT64_MAX = 2**63 - 1
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_STORED_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def key_text(value: Any) -> bool:
    """An id: text that a PostgreSQL text column can hold."""
    return isinstance(value, str) and len(value) <= MAX_KEY_TEXT and "\x00" not in value


def key_count(value: Any) -> bool:
    """A sequence number or stream version: an int that fits a signed 64-bit column."""
    return type(value) is int and 0 <= value <= INT64_MAX


def key_day(value: Any) -> bool:
    """A kpi_days day: YYYY-MM-DD."""
    return _text_of(value, _DAY, date.fromisoformat)


def key_instant(value: Any) -> bool:
    """A stored timestamp (services.projectionstore.schema.iso)."""
    return _text_of(value, _STORED_INSTANT, datetime.fromisoformat)


def _text_of(value: Any, form: re.Pattern[str], parse: Callable[[str], object]) -> bool:
    """Text in `form` that `parse` reads without a ValueError."""
    if not (isinstance(value, str) and form.fullmatch(value)):
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


def decode_cursor(cursor: str | None, *parts: KeyPart) -> list[Any] | None:
    """The sort key inside `cursor`, one element per `parts` check; 422 when it is not one
    of ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(parts)
        or not all(ok(v) for ok, v in zip(parts, key, strict=True))
    ):
        raise Problem(
            422, "cursor is not valid", errors=[{"loc": ["query", "cursor"], "msg": "not a cursor"}]
        )
    return key


def page(items: list[Any], limit: int, key_of: Any) -> Page:
    """{"items", "next_cursor"} from up to limit+1 fetched items."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(key_of(items[-1])) if more else None}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reads:
    """One request's reads: its transaction, tables, organisation and clock."""

    cur: Cursor
    t: Tables
    org: str
    now: datetime

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return ReadStore.rows(self.cur, sql, list(params), self.t.generation)

    # -- objectives -------------------------------------------------------------------

    def objective_row(self, objective_id: str) -> tuple[Any, ...] | None:
        found = self.rows(
            f"SELECT {OBJECTIVE_COLUMNS} FROM {self.t.objectives}"
            " WHERE objective_id = ? AND org_id = ?",
            (objective_id, self.org),
        )
        return found[0] if found else None

    def _key_results(self, ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        found: dict[str, list[tuple[Any, ...]]] = {i: [] for i in ids}
        if not ids:
            return found
        marks = ",".join("?" * len(ids))
        for row in self.rows(
            f"SELECT {KR_COLUMNS} FROM {self.t.key_results} WHERE objective_id IN ({marks})"
            " AND org_id = ? AND removed = 0 ORDER BY objective_id, ordinal, kr_id",
            (*ids, self.org),
        ):
            found[row[1]].append(row)
        return found

    def _children(self, ids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {i: [] for i in ids}
        if not ids:
            return found
        marks = ",".join("?" * len(ids))
        for child, parent in self.rows(
            f"SELECT objective_id, parent_id FROM {self.t.objectives} WHERE parent_id IN"
            f" ({marks}) AND org_id = ? AND state <> 'archived' ORDER BY objective_id",
            (*ids, self.org),
        ):
            found[parent].append(child)
        return found

    def objective_views(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        ids = [r[0] for r in rows]
        krs, children = self._key_results(ids), self._children(ids)
        return [objective_view(r, krs[r[0]], children[r[0]], self.now) for r in rows]

    def objective(self, objective_id: str) -> dict[str, Any] | None:
        row = self.objective_row(objective_id)
        return self.objective_views([row])[0] if row is not None else None

    def objectives(
        self,
        *,
        owner: str | None,
        level: str | None,
        status: str | None,
        parent_id: str | None,
        include_archived: bool,
        limit: int,
        cursor: str | None,
    ) -> Page:
        after = decode_cursor(cursor, key_text)
        where, params = ["org_id = ?"], [self.org]
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if level is not None:
            where.append("level = ?")
            params.append(level)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        if not include_archived:
            where.append("state <> 'archived'")
        last = after[0] if after else ""
        items: list[dict[str, Any]] = []
        # status is evaluated at request time, so it filters after evaluation.
        while len(items) <= limit:
            batch = self.rows(
                f"SELECT {OBJECTIVE_COLUMNS} FROM {self.t.objectives} WHERE "
                + " AND ".join(where)
                + " AND objective_id > ? ORDER BY objective_id LIMIT ?",
                (*params, last, limit + 1),
            )
            if not batch:
                break
            views = self.objective_views(batch)
            items += [v for v in views if status is None or v["status"] == status]
            last = batch[-1][0]
            if len(batch) <= limit:
                break
        return page(items, limit, lambda v: [v["id"]])

    def tree(self, root: str | None) -> list[dict[str, Any]] | None:
        """Nested views (children replaced by their views), from `root` or from every top."""
        rows = self.rows(
            f"SELECT {OBJECTIVE_COLUMNS} FROM {self.t.objectives}"
            " WHERE org_id = ? AND state <> 'archived' ORDER BY objective_id",
            (self.org,),
        )
        views = {v["id"]: v for v in self.objective_views(rows)}
        for view in views.values():
            view["children"] = _newest_first([views[c] for c in view["children"] if c in views])
        if root is not None:
            return [views[root]] if root in views else None
        return _newest_first([v for v in views.values() if v["parent_id"] not in views])

    def history(
        self, objective_id: str, start: datetime | None, end: datetime | None, limit: int,
        cursor: str | None,
    ) -> Page:  # fmt: skip
        after = decode_cursor(cursor, key_count)
        where, params = ["objective_id = ?", "org_id = ?", "seq > ?"], [
            objective_id, self.org, after[0] if after else -1,
        ]  # fmt: skip
        if start is not None:
            where.append("occurred_at >= ?")
            params.append(iso(start))
        if end is not None:
            where.append("occurred_at <= ?")
            params.append(iso(end))
        rows = self.rows(
            "SELECT seq, occurred_at, recorded_at, event_id, event_type, score, progress,"
            f" kr_scores FROM {self.t.score_history} WHERE "
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?",
            (*params, limit + 1),
        )
        items = [
            {
                "seq": seq,
                "occurred_at": occurred_at,
                "recorded_at": recorded_at,
                "event_id": event_id,
                "event_type": event_type,
                "score": score,
                "progress": progress,
                "key_results": orjson.loads(kr_scores) if kr_scores else {},
            }
            for seq, occurred_at, recorded_at, event_id, event_type, score, progress, kr_scores in (
                rows
            )
        ]
        result = page(items, limit, lambda v: [v["seq"]])
        for item in result["items"]:
            item.pop("seq")
        return result

    def events(self, stream_id: str, limit: int, cursor: str | None) -> Page:
        after = decode_cursor(cursor, key_count)
        rows = self.rows(
            f"SELECT stream_version, position, body FROM {self.t.goal_events}"
            " WHERE stream_id = ? AND org_id = ? AND stream_version > ?"
            " ORDER BY stream_version LIMIT ?",
            (stream_id, self.org, after[0] if after else 0, limit + 1),
        )
        items = [{**orjson.loads(body), "position": position} for _v, position, body in rows]
        return page(items, limit, lambda v: [v["stream_version"]])

    # -- KPIs ---------------------------------------------------------------------------

    def kpi_row(self, kpi_id: str) -> tuple[Any, ...] | None:
        found = self.rows(
            f"SELECT {KPI_COLUMNS} FROM {self.t.kpis} WHERE kpi_id = ? AND org_id = ?",
            (kpi_id, self.org),
        )
        return found[0] if found else None

    def kpi(self, kpi_id: str) -> dict[str, Any] | None:
        row = self.kpi_row(kpi_id)
        if row is None:
            return None
        first, after_last = current_bucket_days(row[7], self.now)
        days = self.rows(
            f"SELECT {DAY_COLUMNS} FROM {self.t.kpi_days}"
            " WHERE kpi_id = ? AND day >= ? AND day < ? ORDER BY day",
            (kpi_id, first, after_last),
        )
        # The target in force now by valid time (or within AHEAD: what the processor's KPI
        # row and breach rule hold), not the retargeting appended last, which an import
        # may have backdated.
        return kpi_view(row, days, self.now, target_now(self._targets(row), self.now))

    def _targets(self, row: tuple[Any, ...]) -> tuple[KpiTarget, ...]:
        """The target history of the KPI of this kpis row (KPI_COLUMNS)."""
        # (The row's target when its events are not in this generation: cannot happen in
        # one transaction, but a view must never fail on it.)
        return self.kpi_targets(row[0]) or (KpiTarget(EPOCH, row[5], row[6]),)

    def kpi_targets(self, kpi_id: str) -> tuple[KpiTarget, ...]:
        """The KPI's target history (definition, then each retargeting) from its events."""
        changes = []
        for (body,) in self.rows(
            f"SELECT body FROM {self.t.goal_events} WHERE stream_id = ?"
            " AND type IN ('kpi.defined', 'kpi.retargeted') ORDER BY stream_version",
            (kpi_id,),
        ):
            e = events.decode(body)
            if isinstance(e, events.KpiDefined | events.KpiRetargeted):
                changes.append(KpiTarget(e.occurred_at, e.target, e.amber))
        return kpi_targets(changes)

    def series(
        self, kpi_id: str, start: datetime | None, end: datetime | None, limit: int,
        cursor: str | None,
    ) -> Page | None:  # fmt: skip
        row = self.kpi_row(kpi_id)
        if row is None:
            return None
        direction, interval, aggregation = row[4], row[7], row[8]
        targets = self._targets(row)
        after = decode_cursor(cursor, key_day)
        where, params = ["kpi_id = ?"], [kpi_id]
        # Whole buckets only, so each value is complete: those from the bucket holding
        # `start` to the bucket holding `end` (UTC, whatever offset they were given in).
        if start is not None:
            where.append("day >= ?")
            params.append(bucket_start(start, interval).date().isoformat())
        if end is not None:
            where.append("day <= ?")
            params.append(_last_day_of_bucket(end, interval).isoformat())
        if after is not None:
            where.append("day > ?")
            params.append(after[0])
        buckets: dict[str, list[tuple[Any, ...]]] = {}
        for day in self.rows(
            f"SELECT {DAY_COLUMNS} FROM {self.t.kpi_days} WHERE "
            + " AND ".join(where)
            + " ORDER BY day",
            params,
        ):
            key = iso(bucket_of_day(day[0], interval))
            if key not in buckets and len(buckets) > limit:
                break
            buckets.setdefault(key, []).append(day)
        items = []
        for key, days in buckets.items():
            acc = merge_days(days)
            value = acc.value(aggregation) if acc.count else None  # no readings: no_data
            # Each bucket is judged against the target in force then, not today's.
            judged = bucket_judged_at(parse_iso(key), interval, self.now)
            # The open bucket is judged now, as the KPI's view judges it (target_now).
            at_now = judged == self.now
            force = target_now(targets, judged) if at_now else target_in_force(targets, judged)
            items.append(
                {
                    "bucket_start": key,
                    "value": value,
                    "count": acc.count,
                    "status": kpi_status(value, direction, force.target, force.amber),
                    "_last_day": days[-1][0],
                }
            )
        # The cursor is the last day of the last bucket served.
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor([_last_day_of(items[-1])]) if more else None
        for item in items:
            item.pop("_last_day")
        return {"items": items, "next_cursor": next_cursor}

    # -- detections -----------------------------------------------------------------------

    def detections(
        self, *, kind: str | None, reason: str | None, subject_id: str | None,
        active: bool | None, limit: int, cursor: str | None,
    ) -> Page:  # fmt: skip
        after = decode_cursor(cursor, key_instant, key_text)
        where, params = ["org_id = ?"], [self.org]
        for column, value in (("kind", kind), ("reason", reason), ("subject_id", subject_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if active is True:
            where.append("resolved_at IS NULL")
        elif active is False:
            where.append("resolved_at IS NOT NULL")
        if after is not None:
            where.append("(detected_at < ? OR (detected_at = ? AND detection_id < ?))")
            params += [after[0], after[0], after[1]]
        rows = self.rows(
            f"SELECT {DETECTION_COLUMNS} FROM {self.t.detections} WHERE "
            + " AND ".join(where)
            + " ORDER BY detected_at DESC, detection_id DESC LIMIT ?",
            (*params, limit + 1),
        )
        return page([detection_view(r) for r in rows], limit, lambda v: [v["detected_at"], v["id"]])


def _last_day_of_bucket(at: datetime, interval: Interval) -> date:
    """The last UTC day of the bucket holding instant `at` (date.max at the calendar's end)."""
    try:
        return (bucket_end(at, interval) - timedelta(days=1)).date()
    except (OverflowError, ValueError):  # the bucket after December 9999
        return date.max


def _last_day_of(item: dict[str, Any]) -> str:
    return str(item["_last_day"])


def _newest_first(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Siblings as a reader scans them: the current period first, then by title."""
    by_title = sorted(views, key=lambda v: (v["title"], v["id"]))
    return sorted(by_title, key=lambda v: v["period"]["start"], reverse=True)

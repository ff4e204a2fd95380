"""Composition root of the query service: every read of API.md, the SSE stream, the dashboard.

Reads only the projection store. The token's organisation is applied to every query: another
organisation's resource answers 404 and lists come back empty. `install(app, settings)` adds
the routes to the front door; `create_app()` runs the service alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, AwareDatetime, BeforeValidator

from contracts.timestamps import rfc3339_text
from services.http.app import service_app
from services.http.problems import Problem
from services.http.security import verify_bearer
from services.projectionstore.db import Cursor, Database
from services.projectionstore.schema import Tables
from services.query import live, ops, timetravel
from services.query.reads import Reads
from services.query.store import GenerationMovedError, ReadStore
from services.settings import Settings, load_settings

STATIC_DIR = Path(__file__).parent / "static"
POSITION_HEADER = "X-Projection-Position"
MIN_POSITION_WAIT_S = 10.0
MAX_LIMIT = 1000
bearer = HTTPBearer(auto_error=False, description="okrstream API token")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size (default 100)")]
# Free text in a query string: any character but NUL, which PostgreSQL text cannot hold.
NO_NUL = r"^[^\x00]*$"
PageCursor = Annotated[
    str | None, Query(max_length=500, pattern=NO_NUL, description="opaque, from next_cursor")
]
MinPosition = Annotated[
    int | None,
    Query(ge=0, le=2**62, description="answer only once projections include this position"),
]
T = TypeVar("T")


def utc_instant(value: datetime) -> datetime:
    """A query parameter's instant in UTC. One whose UTC form falls outside the years
    1-9999 (0001-01-01T00:00:00+05:00) is a ValueError, so a 422 problem, not a 500."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range once converted to UTC") from None


# RFC 3339 date-time text only: no Unix time, no time without seconds, no +0000 offset.
UtcInstant = Annotated[AwareDatetime, BeforeValidator(rfc3339_text), AfterValidator(utc_instant)]
Instant = Annotated[UtcInstant | None, Query()]
From = Annotated[UtcInstant | None, Query(alias="from")]


class ReadRequest:
    """One read: the caller's organisation, min_position waiting, X-Projection-Position."""

    def __init__(
        self, store: ReadStore, wait_s: float, org: str, min_position: int | None,
        response: Response,
    ) -> None:  # fmt: skip
        self.store = store
        self.wait_s = wait_s
        self.org = org
        self.min_position = min_position
        self.response = response
        self.position = 0

    def _wait(self) -> None:
        if self.min_position is None:
            return
        deadline = time.monotonic() + self.wait_s
        delay = 0.005
        position = 0
        while True:
            # Replays swapping one after another: poll again.
            with contextlib.suppress(GenerationMovedError):
                position = self.store.current_position()
            if position >= self.min_position:
                return
            if time.monotonic() >= deadline:
                raise Problem(
                    503,
                    f"projections are at position {position}, not yet {self.min_position}",
                    headers={"Retry-After": "1", POSITION_HEADER: str(position)},
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def run(self, fn: Callable[[Reads], T]) -> T:
        """`fn` over one read transaction scoped to the caller's organisation, at the current
        instant. Run again when a replay's swap moves the live generation during it."""
        self._wait()

        def once(cur: Cursor, tables: Tables) -> T:
            self.position = self.store.position(cur, tables)
            self.response.headers[POSITION_HEADER] = str(self.position)
            return fn(Reads(cur, tables, self.org, datetime.now(UTC)))

        try:
            return self.store.read(once)
        except GenerationMovedError as exc:
            raise Problem(
                503, f"projections are being swapped ({exc})", headers={"Retry-After": "1"}
            ) from exc

    def not_found(self, what: str) -> Problem:
        return Problem(404, f"no such {what}", headers={POSITION_HEADER: str(self.position)})


async def read_request(
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    min_position: MinPosition = None,
) -> ReadRequest:
    """Bearer auth with the `read` scope (as services.http.security.Reader: 401/403), in one
    async dependency: each sync dependency would cost a threadpool hop per request."""
    # verify() answers from its in-memory cache (30 s) without I/O; a miss is one indexed
    # lookup, rare enough to run inline.
    principal = verify_bearer(request, credentials, "read")
    state = request.app.state
    return ReadRequest(
        state.query_store,
        getattr(state, "min_position_wait_s", MIN_POSITION_WAIT_S),
        principal.org_id,
        min_position,
        response,
    )


Read = Annotated[ReadRequest, Depends(read_request)]


def _etag(response: Response, version: int) -> None:
    # The ETag is the resource's version, for If-Match on writes. It is not a validator of
    # the view: readings change scores without changing the version, so no 304 answers,
    # and views are not cached.
    response.headers["ETag"] = f'"{version}"'
    response.headers["Cache-Control"] = "no-store"


def build_router() -> APIRouter:
    router = APIRouter(tags=["reads"])

    @router.get("/v1/objectives", summary="List objective views")
    def list_objectives(
        read: Read,
        owner: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        level: Literal["company", "department", "team", "individual"] | None = None,
        status: Literal["achieved", "not_started", "on_track", "behind", "at_risk"] | None = None,
        parent_id: UUID | None = None,
        include_archived: bool = False,
        limit: Limit = 100,
        cursor: PageCursor = None,
    ) -> dict[str, Any]:
        return read.run(
            lambda r: r.objectives(
                owner=owner,
                level=level,
                status=status,
                parent_id=str(parent_id) if parent_id else None,
                include_archived=include_archived,
                limit=limit,
                cursor=cursor,
            )
        )

    # Declared before /{objective_id} so "tree" is not taken for an id.
    @router.get("/v1/objectives/tree", summary="Nested objective views with rollup_score")
    def objective_tree(read: Read, root: UUID | None = None) -> dict[str, Any]:
        found = read.run(lambda r: r.tree(str(root) if root else None))
        if found is None:
            raise read.not_found("objective")
        return {"items": found, "next_cursor": None}

    @router.get("/v1/objectives/{objective_id}", summary="An objective view")
    def get_objective(
        objective_id: UUID,
        read: Read,
        request: Request,
        response: Response,
        as_of: Instant = None,
        known_at: Instant = None,
    ) -> Any:
        def view_of(r: Reads) -> dict[str, Any] | None:
            if as_of is None and known_at is None:
                return r.objective(str(objective_id))
            return timetravel.objective_at(r, str(objective_id), as_of, known_at)

        view = read.run(view_of)
        if view is None:
            raise read.not_found("objective")
        _etag(response, int(view["version"]))
        return view

    @router.get(
        "/v1/objectives/{objective_id}/key-results/{kr_id}",
        summary="A key result view (as in its objective's view; the Location of its creation)",
    )
    def get_key_result(
        objective_id: UUID,
        kr_id: UUID,
        read: Read,
        request: Request,
        response: Response,
        as_of: Instant = None,
        known_at: Instant = None,
    ) -> Any:
        view = get_objective(objective_id, read, request, response, as_of, known_at)
        for kr in view["key_results"]:
            if kr["id"] == str(kr_id):
                return kr  # the ETag is its objective's version, which If-Match names
        raise read.not_found("key result")

    @router.get("/v1/objectives/{objective_id}/history", summary="An objective's score history")
    def objective_history(
        objective_id: UUID,
        read: Read,
        from_: From = None,
        to: Instant = None,
        limit: Limit = 100,
        cursor: PageCursor = None,
    ) -> dict[str, Any]:
        def history(r: Reads) -> dict[str, Any]:
            if r.objective_row(str(objective_id)) is None:
                raise read.not_found("objective")
            return r.history(str(objective_id), from_, to, limit, cursor)

        return read.run(history)

    @router.get("/v1/objectives/{objective_id}/events", summary="An objective's raw events")
    def objective_events(
        objective_id: UUID, read: Read, limit: Limit = 100, cursor: PageCursor = None
    ) -> dict[str, Any]:
        def stream(r: Reads) -> dict[str, Any]:
            if r.objective_row(str(objective_id)) is None:
                raise read.not_found("objective")
            return r.events(str(objective_id), limit, cursor)

        return read.run(stream)

    @router.get("/v1/kpis/{kpi_id}", summary="A KPI view")
    def get_kpi(
        kpi_id: UUID, read: Read, request: Request, response: Response, as_of: Instant = None
    ) -> Any:
        view = read.run(
            lambda r: (
                r.kpi(str(kpi_id)) if as_of is None else timetravel.kpi_at(r, str(kpi_id), as_of)
            )
        )
        if view is None:
            raise read.not_found("KPI")
        _etag(response, int(view["version"]))
        return view

    @router.get("/v1/kpis/{kpi_id}/series", summary="A KPI's buckets")
    def kpi_series(
        kpi_id: UUID,
        read: Read,
        from_: From = None,
        to: Instant = None,
        limit: Limit = 100,
        cursor: PageCursor = None,
    ) -> dict[str, Any]:
        found = read.run(lambda r: r.series(str(kpi_id), from_, to, limit, cursor))
        if found is None:
            raise read.not_found("KPI")
        return found

    @router.get("/v1/detections", summary="Over- and under-reach detections")
    def list_detections(
        read: Read,
        kind: Literal["over_reach", "under_reach", "kpi_breach", "stale_kpi"] | None = None,
        reason: Literal[
            "forecast",
            "final",
            "achieved_early",
            "target_already_met",
            "chronic",
            "red",
            "no_data",
        ]
        | None = None,
        subject_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        active: bool | None = None,
        limit: Limit = 100,
        cursor: PageCursor = None,
    ) -> dict[str, Any]:
        return read.run(
            lambda r: r.detections(
                kind=kind,
                reason=reason,
                subject_id=subject_id,
                active=active,
                limit=limit,
                cursor=cursor,
            )
        )

    return router


def _dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def install(app: FastAPI, settings: Settings) -> None:
    """Add the query service's routes and state to `app` (the front door or its own)."""
    if not hasattr(app.state, "projection_db"):
        app.state.projection_db = Database.from_settings(settings, settings.projections_db_path)
    if not hasattr(app.state, "query_store"):
        app.state.query_store = ReadStore(app.state.projection_db, settings.kafka_partitions)
    app.state.query_settings = settings
    app.include_router(build_router())
    app.include_router(live.build_router())
    app.include_router(ops.build_router())
    ops.install_metrics(app)
    app.add_api_route("/", _dashboard, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="query-static")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The query service alone (production: stateless replicas behind a balancer)."""
    return service_app(settings or load_settings(), "okrstream query", [install])

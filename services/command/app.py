"""Composition root of the command service: the goal commands of API.md over HTTP.

`install(app, settings)` adds the routes to any FastAPI app (the front door does this);
`create_app()` builds the service alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from contracts.http import (
    CheckInCreate,
    CheckInPublic,
    KeyResultCreate,
    KeyResultRemove,
    KeyResultUpdate,
    KpiCreate,
    KpiRetire,
    KpiUpdate,
    ObjectiveClose,
    ObjectiveCreate,
    ObjectiveTransition,
    ObjectiveUpdate,
    PromoteCreate,
    PromotePublic,
    WritePublic,
)
from services.command.decisions import Context, Ids, Invalid, NotFound, Refused
from services.command.service import CommandService, Contended, Outcome, Stale
from services.eventstore import EventStore, StoreUnavailableError
from services.http.app import service_app
from services.http.idempotency import Answer, IdempotencyStore, fingerprint, run_once
from services.http.problems import Problem
from services.http.security import Writer
from services.settings import Settings, load_settings

MAX_FUTURE_SKEW = timedelta(minutes=5)

IfMatch = Annotated[str | None, Header(alias="If-Match")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: str | None) -> int | None:
    """The version an If-Match header names (`"N"`), None when absent or `*`."""
    if value is None or value.strip() == "*":
        return None
    found = _ETAG.match(value)
    if found is None:
        raise Problem(400, 'If-Match must be a version ETag like "3"')
    return int(found.group(1))


def _occurred_at(body: BaseModel | None, now: datetime) -> datetime:
    when: datetime | None = getattr(body, "occurred_at", None)
    if when is None:
        return now
    if when > now + MAX_FUTURE_SKEW:
        raise Problem(
            422,
            "occurred_at is more than 5 minutes in the future",
            errors=[{"loc": ["body", "occurred_at"], "msg": "more than 5 minutes ahead"}],
        )
    return when


def _fields(body: BaseModel, *, only_set: bool = False) -> dict[str, Any]:
    return body.model_dump(exclude={"occurred_at"}, exclude_unset=only_set)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


class Commands:
    """The HTTP edge of the command service: context, idempotency, errors → problems."""

    def __init__(
        self, service: CommandService, idempotency: IdempotencyStore | None = None
    ) -> None:
        self.service = service
        self.idempotency = idempotency

    def run(
        self,
        request: Request,
        org_id: str,
        key: str | None,
        body: BaseModel | None,
        produce: Callable[[Context], Answer],
    ) -> JSONResponse:
        now = datetime.now(UTC)
        canonical = body.model_dump_json(exclude_unset=True) if body is not None else ""
        fp = fingerprint(request.method, request.url.path, canonical)
        # The ids derive from the request as well as the key: once the key's record has
        # expired, the key with another request is another command with other ids, and
        # cannot find (and answer with) the events of the request that used it first.
        context = Context(
            org_id=org_id,
            occurred_at=_occurred_at(body, now),
            recorded_at=now,
            ids=Ids(seed=f"{org_id}\x00{key}\x00{fp}" if key is not None else None),
        )

        def attempt(_retried: bool) -> Answer:
            try:
                return produce(context)
            except Refused as exc:
                raise Problem(409, str(exc)) from None
            except NotFound as exc:
                raise Problem(404, str(exc)) from None
            except Invalid as exc:
                raise Problem(422, str(exc), errors=[{"loc": ["body"], "msg": str(exc)}]) from None
            except Stale as exc:
                raise Problem(412, f"stale If-Match: {exc}", headers=_etag(exc.current)) from None
            except ValidationError as exc:
                errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
                raise Problem(422, "the command is not valid", errors=errors) from None
            except StoreUnavailableError as exc:
                raise Problem(
                    503, f"the event store is unavailable: {exc}", headers={"Retry-After": "1"}
                ) from None
            except Contended as exc:
                raise Problem(503, str(exc), headers={"Retry-After": "1"}) from None

        if self.idempotency is None:
            answer = attempt(False)
        else:
            answer = run_once(self.idempotency, org_id, key, fp, attempt)
        return JSONResponse(answer.body, status_code=answer.status, headers=dict(answer.headers))


def _written(
    outcome: Outcome, resource_id: UUID, status: int = 200, location: str | None = None
) -> Answer:
    version = outcome.version
    headers = _etag(version)
    if location is not None:
        headers["Location"] = location
    body = WritePublic(id=resource_id, version=version, position=outcome.position)
    return Answer(status, body.model_dump(mode="json"), headers)


def build_router() -> APIRouter:
    router = APIRouter(tags=["goal commands"])

    def commands(request: Request) -> Commands:
        found: Commands = request.app.state.commands
        return found

    @router.post("/v1/objectives", status_code=201, response_model=WritePublic)
    def create_objective(
        body: ObjectiveCreate, principal: Writer, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        c = commands(request)

        def produce(ctx: Context) -> Answer:
            objective_id = ctx.ids.resource()
            out = c.service.create_objective(ctx, objective_id, _fields(body))
            return _written(out, objective_id, 201, f"/v1/objectives/{objective_id}")

        return c.run(request, principal.org_id, key, body, produce)

    @router.patch("/v1/objectives/{objective_id}", response_model=WritePublic)
    def update_objective(
        objective_id: UUID,
        body: ObjectiveUpdate,
        principal: Writer,
        request: Request,
        if_match: IfMatch = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        changes = _fields(body, only_set=True)

        def produce(ctx: Context) -> Answer:
            out = c.service.revise_objective(ctx, objective_id, version, changes)
            return _written(out, objective_id)

        return c.run(request, principal.org_id, None, body, produce)

    @router.post("/v1/objectives/{objective_id}/close", response_model=WritePublic)
    def close_objective(
        objective_id: UUID,
        principal: Writer,
        request: Request,
        body: ObjectiveClose | None = None,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        note = body.note if body is not None else None

        def produce(ctx: Context) -> Answer:
            return _written(
                c.service.close_objective(ctx, objective_id, version, note), objective_id
            )

        return c.run(request, principal.org_id, key, body, produce)

    @router.post("/v1/objectives/{objective_id}/reopen", response_model=WritePublic)
    def reopen_objective(
        objective_id: UUID,
        principal: Writer,
        request: Request,
        body: ObjectiveTransition | None = None,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)

        def produce(ctx: Context) -> Answer:
            return _written(c.service.reopen_objective(ctx, objective_id, version), objective_id)

        return c.run(request, principal.org_id, key, body, produce)

    @router.post("/v1/objectives/{objective_id}/archive", response_model=WritePublic)
    def archive_objective(
        objective_id: UUID,
        principal: Writer,
        request: Request,
        body: ObjectiveTransition | None = None,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)

        def produce(ctx: Context) -> Answer:
            return _written(c.service.archive_objective(ctx, objective_id, version), objective_id)

        return c.run(request, principal.org_id, key, body, produce)

    @router.post(
        "/v1/objectives/{objective_id}/key-results", status_code=201, response_model=WritePublic
    )
    def add_key_result(
        objective_id: UUID,
        body: KeyResultCreate,
        principal: Writer,
        request: Request,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)

        def produce(ctx: Context) -> Answer:
            kr_id = ctx.ids.resource()
            out = c.service.add_key_result(ctx, objective_id, kr_id, version, _fields(body))
            location = f"/v1/objectives/{objective_id}/key-results/{kr_id}"
            return _written(out, kr_id, 201, location)

        return c.run(request, principal.org_id, key, body, produce)

    @router.patch("/v1/objectives/{objective_id}/key-results/{kr_id}", response_model=WritePublic)
    def update_key_result(
        objective_id: UUID,
        kr_id: UUID,
        body: KeyResultUpdate,
        principal: Writer,
        request: Request,
        if_match: IfMatch = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        changes = _fields(body, only_set=True)

        def produce(ctx: Context) -> Answer:
            out = c.service.update_key_result(ctx, objective_id, kr_id, version, changes)
            return _written(out, kr_id)

        return c.run(request, principal.org_id, None, body, produce)

    @router.delete("/v1/objectives/{objective_id}/key-results/{kr_id}", response_model=WritePublic)
    def remove_key_result(
        objective_id: UUID,
        kr_id: UUID,
        principal: Writer,
        request: Request,
        body: KeyResultRemove | None = None,
        if_match: IfMatch = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)

        def produce(ctx: Context) -> Answer:
            out = c.service.remove_key_result(ctx, objective_id, kr_id, version)
            return _written(out, kr_id)

        return c.run(request, principal.org_id, None, body, produce)

    @router.post(
        "/v1/objectives/{objective_id}/key-results/{kr_id}/check-ins",
        status_code=201,
        response_model=CheckInPublic,
    )
    def check_in(
        objective_id: UUID,
        kr_id: UUID,
        body: CheckInCreate,
        principal: Writer,
        request: Request,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)

        def produce(ctx: Context) -> Answer:
            out = c.service.check_in(ctx, objective_id, kr_id, version, _fields(body))
            answer = CheckInPublic(version=out.version, position=out.position)
            return Answer(201, answer.model_dump(mode="json"), _etag(out.version))

        return c.run(request, principal.org_id, key, body, produce)

    @router.post(
        "/v1/objectives/{objective_id}/key-results/{kr_id}/promote",
        status_code=201,
        response_model=PromotePublic,
    )
    def promote(
        objective_id: UUID,
        kr_id: UUID,
        principal: Writer,
        request: Request,
        body: PromoteCreate | None = None,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        interval = body.interval if body is not None else None
        amber = body.amber if body is not None else None

        def produce(ctx: Context) -> Answer:
            kpi_id = ctx.ids.resource()
            out = c.service.promote(ctx, objective_id, kr_id, kpi_id, version, interval, amber)
            promoted = next(e for e in out.events if e.type == "key_result.promoted")
            kpi_id = promoted.kpi_id  # type: ignore[attr-defined]
            answer = PromotePublic(kpi_id=kpi_id, position=out.position)
            headers = {**_etag(out.version), "Location": f"/v1/kpis/{kpi_id}"}
            return Answer(201, answer.model_dump(mode="json"), headers)

        return c.run(request, principal.org_id, key, body, produce)

    @router.post("/v1/kpis", status_code=201, response_model=WritePublic)
    def define_kpi(
        body: KpiCreate, principal: Writer, request: Request, key: IdempotencyKey = None
    ) -> JSONResponse:
        c = commands(request)

        def produce(ctx: Context) -> Answer:
            kpi_id = ctx.ids.resource()
            out = c.service.define_kpi(ctx, kpi_id, _fields(body))
            return _written(out, kpi_id, 201, f"/v1/kpis/{kpi_id}")

        return c.run(request, principal.org_id, key, body, produce)

    @router.patch("/v1/kpis/{kpi_id}", response_model=WritePublic)
    def update_kpi(
        kpi_id: UUID, body: KpiUpdate, principal: Writer, request: Request, if_match: IfMatch = None
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        changes = _fields(body, only_set=True)

        def produce(ctx: Context) -> Answer:
            return _written(c.service.revise_kpi(ctx, kpi_id, version, changes), kpi_id)

        return c.run(request, principal.org_id, None, body, produce)

    @router.post("/v1/kpis/{kpi_id}/retire", response_model=WritePublic)
    def retire_kpi(
        kpi_id: UUID,
        principal: Writer,
        request: Request,
        body: KpiRetire | None = None,
        if_match: IfMatch = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        c, version = commands(request), parse_if_match(if_match)
        reason = body.reason if body is not None else None

        def produce(ctx: Context) -> Answer:
            return _written(c.service.retire_kpi(ctx, kpi_id, version, reason), kpi_id)

        return c.run(request, principal.org_id, key, body, produce)

    return router


def install(app: FastAPI, settings: Settings) -> None:
    """Add the goal commands to `app`; share its EventStore and idempotency store."""
    if not hasattr(app.state, "event_store"):
        app.state.event_store = EventStore.from_settings(settings)
        app.router.on_shutdown.append(app.state.event_store.close)
    if not hasattr(app.state, "idempotency"):
        app.state.idempotency = IdempotencyStore.from_settings(settings)
        app.router.on_shutdown.append(app.state.idempotency.close)
    app.state.commands = Commands(CommandService(app.state.event_store), app.state.idempotency)
    app.include_router(build_router())


def create_app(settings: Settings | None = None) -> FastAPI:
    """The command service alone."""
    return service_app(settings or load_settings(), "okrstream commands", [install])

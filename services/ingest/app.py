"""Composition root of the ingest service: POST /v1/readings (API.md, "Readings").

`install(app, settings)` adds the route to any FastAPI app (the front door does this);
`create_app()` builds the service alone. Answers 202 only after the batch is committed (to
the event store, or with OKR_INGEST_MODE=kafka acknowledged by Kafka with acks=all).
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from contracts.readings import ReadingsAccepted
from services.eventstore import EventStore, StoreUnavailableError
from services.http.app import service_app
from services.http.idempotency import Answer, IdempotencyStore, fingerprint, run_once
from services.http.problems import Problem
from services.http.security import Ingester
from services.ingest.kafka_sink import KafkaReadingsSink, KafkaUnavailableError
from services.ingest.service import ReadingsService
from services.settings import Settings, load_settings

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(raw: bytes) -> Any:
    """The body as JSON. A number beyond a double's range (1e400) is valid JSON that orjson
    refuses: such a body is read again with the standard library, where it becomes an
    infinity its reading is rejected for alone (each reading is judged alone), not a 400
    for the whole batch. What orjson cannot write back (a lone surrogate) stays refused."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "number is infinity" not in str(exc):
            raise
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
        orjson.dumps(body)
    except (ValueError, TypeError, orjson.JSONEncodeError) as exc:
        raise orjson.JSONDecodeError(str(exc), "", 0) from None
    return body


def _items(raw: bytes, limit: int) -> list[Any]:
    try:
        body = _loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
        raise Problem(
            422,
            'the body must be {"readings": [...]}',
            errors=[{"loc": ["body", "readings"], "msg": "a list of readings is required"}],
        )
    extra = sorted(set(body) - {"readings"})
    if extra:
        raise Problem(
            422,
            "unknown fields in the body",
            errors=[{"loc": ["body", k], "msg": "Extra inputs are not permitted"} for k in extra],
        )
    items: list[Any] = body["readings"]
    if len(items) > limit:
        raise Problem(413, f"at most {limit} readings per request ({len(items)} sent)")
    return items


def _same_reading(item: Any) -> Any:
    """A batch entry as the fingerprint sees it: its value as a float (1 and 1.0, -0.0 and
    0 are one value) and its observed_at as UTC text (`…Z`, `+00:00`, `.000Z` are one
    instant); what is not a valid reading is kept as sent."""
    if not isinstance(item, dict):
        return item
    same = dict(item)
    value = item.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        same["value"] = float(value) + 0.0
    observed = item.get("observed_at")
    if isinstance(observed, str):
        try:
            at = datetime.fromisoformat(observed)
        except ValueError:
            pass
        else:
            if at.tzinfo is not None:
                with contextlib.suppress(OverflowError):
                    same["observed_at"] = at.astimezone(UTC).isoformat()
    return same


def _fingerprinted(items: list[Any], raw: bytes) -> bytes:
    """The batch as its Idempotency-Key fingerprint sees it: parsed, each entry as
    `_same_reading`, written again with sorted keys. A retry that a client serialised anew
    (key order, whitespace, how a number or an instant is written) is the same request;
    another reading, value or id is another one. A body nested deeper than orjson writes
    (its readings are rejected anyway) is fingerprinted by its bytes."""
    try:
        return orjson.dumps([_same_reading(i) for i in items], option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return raw


def build_router() -> APIRouter:
    router = APIRouter(tags=["readings"])

    @router.post(
        "/v1/readings",
        status_code=202,
        response_model=ReadingsAccepted,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["readings"],
                            "properties": {"readings": {"type": "array"}},
                        }
                    }
                },
            }
        },
    )
    async def post_readings(
        request: Request, principal: Ingester, key: IdempotencyKey = None
    ) -> Response:
        raw = await request.body()
        settings: Settings = request.app.state.ingest_settings
        service: ReadingsService = request.app.state.readings
        items = _items(raw, settings.max_readings_per_request)

        def produce(_retried: bool) -> Answer:
            try:
                return Answer(202, service.accept(principal.org_id, items))
            except StoreUnavailableError as exc:
                raise Problem(
                    503, f"the event store is unavailable: {exc}", headers={"Retry-After": "1"}
                ) from None
            except KafkaUnavailableError as exc:
                raise Problem(
                    503,
                    f"Kafka did not acknowledge the readings: {exc}",
                    headers={"Retry-After": "1"},
                ) from None

        def run() -> Answer:
            # Only a request with a key is fingerprinted (run_once ignores it otherwise).
            body = _fingerprinted(items, raw) if key is not None else b""
            fp = fingerprint("POST", request.url.path, body)
            return run_once(request.app.state.idempotency, principal.org_id, key, fp, produce)

        answer = await run_in_threadpool(run)
        return Response(
            orjson.dumps(answer.body),
            status_code=answer.status,
            media_type="application/json",
            headers=dict(answer.headers),
        )

    return router


def install(app: FastAPI, settings: Settings) -> None:
    """Add POST /v1/readings to `app`; share its EventStore and idempotency store."""
    if not hasattr(app.state, "event_store"):
        app.state.event_store = EventStore.from_settings(settings)
        app.router.on_shutdown.append(app.state.event_store.close)
    if not hasattr(app.state, "idempotency"):
        app.state.idempotency = IdempotencyStore.from_settings(settings)
        app.router.on_shutdown.append(app.state.idempotency.close)
    app.state.ingest_settings = settings
    sink = None
    if settings.ingest_mode == "kafka":
        sink = KafkaReadingsSink(settings)
        app.router.on_shutdown.append(sink.close)
    app.state.readings = ReadingsService(
        app.state.event_store, sink, readings_per_record=settings.relay_readings_per_record
    )
    app.include_router(build_router())


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ingest service alone."""
    return service_app(settings or load_settings(), "okrstream ingest", [install])

"""Operations endpoints: /healthz (liveness), /readyz (readiness), /metrics (Prometheus).

The query service never reads the event store, so projection lag is reported from the
processor's watermarks: the applied position and how long ago the newest watermark moved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.query.store import ReadStore

log = logging.getLogger("okrstream.query.ops")
BROKER_CHECK_TTL_S = 5.0


def projection_lag(store: ReadStore) -> dict[str, Any]:
    """applied_position and the age (s) of the newest watermark (None when none yet)."""
    with store.reading() as (cur, tables):
        position = store.position(cur, tables)
        row = ReadStore.one(cur, f"SELECT MAX(updated_at) FROM {tables.watermarks}")
    newest = row[0] if row else None
    age = None
    if newest:
        stamp = datetime.fromisoformat(str(newest).replace("Z", "+00:00"))
        age = max(0.0, (datetime.now(UTC) - stamp).total_seconds())
    return {
        "applied_position": position,
        "watermark_age_s": age,
        "generation": tables.generation,
    }


class _BrokerCheck:
    def __init__(self) -> None:
        self.at = 0.0
        self.result: tuple[bool, str] = (False, "not checked")

    def check(self, bootstrap: str) -> tuple[bool, str]:
        if time.monotonic() - self.at < BROKER_CHECK_TTL_S:
            return self.result
        from services.kafka.admin import wait_for_broker

        try:
            wait_for_broker(bootstrap, timeout_s=2.0)
            self.result = (True, "reachable")
        except Exception as exc:
            self.result = (False, str(exc)[:300])
        self.at = time.monotonic()
        return self.result


def readiness(app: FastAPI) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        checks["projection_store"] = {"ok": True, **projection_lag(app.state.query_store)}
    except Exception as exc:
        ok = False
        checks["projection_store"] = {"ok": False, "error": str(exc)[:300]}
    try:
        with app.state.tokens.db.transaction(write=False) as cur:
            cur.execute("SELECT 1").fetchone()
        checks["token_store"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["token_store"] = {"ok": False, "error": str(exc)[:300]}
    settings = app.state.query_settings
    broker: _BrokerCheck = app.state.query_broker_check
    reachable, detail = broker.check(settings.bootstrap_servers)
    checks["broker"] = {"ok": reachable, "detail": detail, "bootstrap": settings.bootstrap_servers}
    ok = ok and reachable
    return ok, checks


class _StoreCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        position = GaugeMetricFamily(
            "okr_processor_applied_position",
            "Event-store position up to which the projections are complete",
        )
        age = GaugeMetricFamily(
            "okr_processor_watermark_age_seconds",
            "Seconds since the processor last advanced or confirmed a relay watermark (the"
            " relay repeats one about every second: growing means the relay or the processor"
            " is stalled)",
        )
        try:
            lag = projection_lag(self.app.state.query_store)
            position.add_metric([], lag["applied_position"])
            if lag["watermark_age_s"] is not None:
                age.add_metric([], lag["watermark_age_s"])
        except Exception:  # a scrape must answer even when the store does not
            log.warning("metrics: projection store unreadable", exc_info=True)
        yield position
        yield age
        for name, text, table in (
            (
                "okr_processor_objectives_set_aside",
                "Objectives whose re-evaluation failed on its own and was set aside (listed in"
                " the projection store's set_aside table; retried when a processor starts)",
                "set_aside",
            ),
            (
                "okr_processor_goal_events_parked",
                "Goal events whose application failed on their own stream, and those waiting"
                " behind them (listed in the projection store's parked_events table; applied"
                " again when a processor starts)",
                "parked_events",
            ),
        ):
            gauge = GaugeMetricFamily(name, text)
            try:
                with self.app.state.query_store.reading() as (cur, tables):
                    row = ReadStore.one(cur, f"SELECT COUNT(*) FROM {getattr(tables, table)}")
                gauge.add_metric([], int(row[0]) if row else 0)
            except Exception:
                log.warning("metrics: projection store unreadable", exc_info=True)
            yield gauge
        feed = getattr(self.app.state, "query_feed", None)
        subscribers = GaugeMetricFamily("okr_sse_subscribers", "Open /v1/stream connections")
        subscribers.add_metric([], len(feed.subscribers) if feed else 0)
        yield subscribers


class MetricsMiddleware:
    """Request latency by method, route template and status (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.histogram.labels(scope["method"], template, str(status[0])).observe(
                    time.perf_counter() - start
                )
            await send(message)

        await self.app(scope, receive, send_status)


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "okr_http_request_duration_seconds",
        "HTTP request latency until the response starts, by route template",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
    registry.register(_StoreCollector(app))
    app.state.metrics_registry = registry
    app.state.query_broker_check = _BrokerCheck()
    app.add_middleware(MetricsMiddleware, histogram=histogram)


def build_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: stores open, broker reachable, projection lag")
    async def readyz(request: Request) -> JSONResponse:
        ok, checks = await asyncio.to_thread(readiness, request.app)
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, request.app.state.metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router

"""Composition root of the front door: one FastAPI app with every service's routes.

Each service also runs alone from its own `create_app()`; here their `install(app, settings)`
functions add their routes and state to one app, served by uvicorn on OKR_HTTP_PORT.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from services.command import app as command
from services.http.app import service_app
from services.ingest import app as ingest
from services.query import app as query
from services.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The front door app for `settings` (default: from the environment)."""
    return service_app(
        settings or load_settings(),
        "okrstream",
        [command.install, ingest.install, query.install],
        "Event-sourced OKRs and KPIs: the public contract v1.",
    )


def main() -> None:
    """Serve the front door; with OKR_HTTP_WORKERS > 1, that many processes share the port
    (each builds its app from the environment; the stores take concurrent writers)."""
    settings = load_settings()
    uvicorn.run(
        "services.api.main:create_app" if settings.http_workers > 1 else create_app(settings),
        factory=settings.http_workers > 1,
        workers=settings.http_workers if settings.http_workers > 1 else None,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()

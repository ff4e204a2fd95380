"""Composition root of the front door: one FastAPI app with every service's routes.

Each service also runs alone from its own `create_app()`; here their `install(app, settings)`
functions add their routes and state to one app, served by uvicorn on OKR_HTTP_PORT.
"""

from __future__ import annotations

import importlib
import importlib.util

import uvicorn
from fastapi import FastAPI

from services.auth.tokens import TokenStore
from services.http.limits import install_body_limit
from services.http.problems import install_problem_handlers
from services.settings import Settings, load_settings

SERVICES = ("services.command.app", "services.ingest.app", "services.query.app")


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def create_app(settings: Settings | None = None) -> FastAPI:
    """The front door app for `settings` (default: from the environment)."""
    settings = settings or load_settings()
    app = FastAPI(
        title="okrstream",
        version="1",
        description="Event-sourced OKRs and KPIs: the public contract v1.",
    )
    app.state.settings = settings
    app.state.tokens = TokenStore.from_settings(settings)
    install_problem_handlers(app)
    install_body_limit(app, settings)
    for name in SERVICES:
        if _present(name):
            importlib.import_module(name).install(app, settings)
    return app


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

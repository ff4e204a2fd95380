"""Composition root of the front door: one FastAPI app with every service's routes.

Each service also runs alone from its own `create_app()`; here their `install(app, settings)`
functions add their routes and state to one app, served by uvicorn on OKR_HTTP_PORT.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from services.command import app as command
from services.eventstore import StoreUnavailableError
from services.http.app import service_app
from services.ingest import app as ingest
from services.projectionstore.db import DatabaseUnavailableError, lasting
from services.query import app as query
from services.settings import Settings, load_settings

log = logging.getLogger("okrstream.api")
BACKOFF_MIN_S = 0.5  # waiting for an unreachable database at start-up
BACKOFF_MAX_S = 10.0


def create_app(settings: Settings | None = None) -> FastAPI:
    """The front door app for `settings` (default: from the environment)."""
    return service_app(
        settings or load_settings(),
        "okrstream",
        [command.install, ingest.install, query.install],
        "Event-sourced OKRs and KPIs: the public contract v1.",
    )


def create_app_when_ready(settings: Settings | None = None) -> FastAPI:
    """create_app once its stores can be opened: a database that is unreachable is logged
    and tried again with backoff (exiting would have `okrstream up` restart the API over
    and over, and give up on the whole stack during an outage of a minute); a
    misconfiguration (db.lasting: no such database, refused credentials) exits with its
    message."""
    settings = settings or load_settings()
    backoff = BACKOFF_MIN_S
    with _stoppable():
        while True:
            try:
                return create_app(settings)
            except (StoreUnavailableError, DatabaseUnavailableError) as exc:
                if lasting(str(exc)):
                    raise SystemExit(f"api: {exc}") from None
                log.warning("a store is unavailable (%s); retrying in %.1f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM/SIGINT end the process while the block waits. In a uvicorn worker the
    server's handlers are already in place and only flag a shutdown, which a wait for the
    database never looks at: the worker would outlive its stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, _exit) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> None:
    """Serve the front door; with OKR_HTTP_WORKERS > 1, that many processes share the port
    (each builds its app from the environment; the stores take concurrent writers)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "services.api.main:create_app_when_ready"
        if settings.http_workers > 1
        else create_app_when_ready(settings),
        factory=settings.http_workers > 1,
        workers=settings.http_workers if settings.http_workers > 1 else None,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()

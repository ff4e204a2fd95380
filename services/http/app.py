"""One way to build an okrstream HTTP app, for the front door and each service alone."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from services.auth.tokens import TokenStore
from services.http.limits import install_body_limit
from services.http.problems import install_problem_handlers
from services.settings import Settings

Installer = Callable[[FastAPI, Settings], None]


def service_app(
    settings: Settings, title: str, installers: Sequence[Installer], description: str = ""
) -> FastAPI:
    """A FastAPI app with tokens, problem+json errors and the body limit, then each
    service's routes and state from its `install(app, settings)`."""
    app = FastAPI(title=title, version="1", description=description)
    app.state.settings = settings
    app.state.tokens = TokenStore.from_settings(settings)
    app.router.on_shutdown.append(app.state.tokens.close)
    install_problem_handlers(app)
    install_body_limit(app, settings)
    try:
        for install in installers:
            install(app, settings)
    except BaseException:
        # A store that cannot be opened: close those opened already (their pools and
        # files), so that building the app again later leaks nothing.
        for close in reversed(app.router.on_shutdown):
            with contextlib.suppress(Exception):
                close()
        raise
    return app

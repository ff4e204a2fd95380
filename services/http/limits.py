"""Request body size limit as a pure ASGI middleware: 413 problem+json beyond the limit.

A declared Content-Length over the limit is refused before the body is read; a body sent
without one (chunked) is counted while it streams, and refused once it passes the limit.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.http.problems import PROBLEM_JSON
from services.settings import Settings


class BodyTooLargeError(StarletteHTTPException):
    """Raised while the body streams in; the app's problem handlers turn it into 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body exceeds {max_bytes} bytes")


def _problem(max_bytes: int) -> tuple[dict[str, Any], bytes]:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "status": 413,
            "title": "Content Too Large",
            "detail": f"the request body exceeds {max_bytes} bytes",
        }
    )
    start = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


class BodyLimitMiddleware:
    """Answer 413 to HTTP requests whose body is longer than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        start, body = _problem(self.max_bytes)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def install_body_limit(app: FastAPI, settings: Settings) -> None:
    """Refuse bodies over settings.max_body_bytes with 413 on every route of `app`."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

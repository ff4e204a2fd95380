"""RFC 9457 problem details for every error answer.

Handlers turn FastAPI's validation errors (422, with `errors: [{loc, msg}]`), malformed JSON
(400), HTTP exceptions and `Problem` raised by services into `application/problem+json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.eventstore.store import StoreUnavailableError
from services.projectionstore.db import DatabaseUnavailableError

PROBLEM_JSON = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):  # noqa: N818 (a response, not an error condition)
    """Raise to answer with a problem body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "status": status,
        "title": title or TITLES.get(status, "Error"),
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc(loc: Sequence[Any]) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in loc]


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, title=exc.title, errors=exc.errors, headers=exc.headers
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return problem_response(400, "the body is not valid JSON", errors=errors)
    return problem_response(422, "the request is not valid", errors=errors)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A store that cannot be reached or written (unreachable, disk full, read-only): the
    # request may succeed later, so 503 with Retry-After rather than a bare 500.
    return problem_response(503, f"a store is unavailable: {exc}", headers={"Retry-After": "1"})


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of `app` a problem+json answer."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StoreUnavailableError, _on_unavailable)
    app.add_exception_handler(DatabaseUnavailableError, _on_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)

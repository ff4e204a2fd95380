"""Bearer-token authentication and scope checks as FastAPI dependencies.

No or unknown token → 401; a token without the scope → 403. Services get the token store
from `app.state.tokens` (set by their app factory).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.auth.tokens import Principal, TokenStore
from services.http.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="okrstream API token")

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def verify_bearer(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: str | None = None
) -> Principal:
    """The caller's principal: 401 without a known bearer token, 403 without `scope`."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "a bearer token is required", headers=CHALLENGE)
    tokens: TokenStore = request.app.state.tokens
    principal = tokens.verify(credentials.credentials)
    if principal is None:
        raise Problem(401, "unknown token", headers=CHALLENGE)
    if scope is not None and not principal.allows(scope):
        raise Problem(403, f"this token lacks the '{scope}' scope")
    return principal


def require(scope: str):  # type: ignore[no-untyped-def]
    """A dependency that answers 401/403 unless the token is known and has `scope`."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return verify_bearer(request, credentials, scope)

    return check


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Ingester = Annotated[Principal, Depends(require("ingest"))]

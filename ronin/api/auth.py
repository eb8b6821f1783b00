"""Bearer tokens with a scope: every ``/v1`` route needs ``read``, a route that writes needs
``write``. With no token configured the node serves loopback only (see ``ronin serve``) and
every request is allowed."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope as ASGIScope

from ronin.api.state import node_of
from ronin.config import ApiToken, Scope
from ronin.errors import InsufficientScope, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="A token from RONIN_API_TOKENS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def token_scope(tokens: Sequence[ApiToken], given: str) -> Scope | None:
    """The scope of the token ``given``, or None if it is not one of ``tokens``."""
    scope: Scope | None = None
    for token in tokens:  # every token compared, in constant time, whatever matches
        if hmac.compare_digest(given.encode(), token.token.encode()):
            scope = token.scope
    return scope


def may_read(tokens: Sequence[ApiToken]) -> Callable[[ASGIScope], bool]:
    """Whether an ASGI request carries a token that may read (for middleware)."""

    def check(scope: ASGIScope) -> bool:
        if not tokens:
            return True
        given = authorization_headers(scope)
        if len(given) != 1:
            return False
        kind, _, token = given[0].decode("latin-1").partition(" ")
        return kind.lower() == "bearer" and token_scope(tokens, token.strip()) is not None

    return check


def authorization_headers(scope: ASGIScope) -> list[bytes]:
    """Every ``Authorization`` header of a request (HTTP allows one; a proxy may add another)."""
    return [value for name, value in scope["headers"] if name == b"authorization"]


def _scope_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Scope:
    count = len(authorization_headers(request.scope))
    if count > 1:
        raise Unauthenticated(
            f"a request carries one Authorization header, not {count}: which one to judge "
            "would be a guess"
        )
    tokens = node_of(request).settings.api_tokens
    if not tokens:
        return "write"
    if credentials is None:
        raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
    scope = token_scope(tokens, credentials.credentials)
    if scope is None:
        raise Unauthenticated("unknown token")
    return scope


async def require_read(request: Request, credentials: Credentials) -> None:
    """Any known token."""
    _scope_of(request, credentials)


async def require_write(request: Request, credentials: Credentials) -> None:
    """A token with the ``write`` scope."""
    if _scope_of(request, credentials) != "write":
        raise InsufficientScope("this route needs a token with the write scope")

"""Bearer tokens with a scope: every ``/v1`` route needs ``read``, a route that writes needs
``write``. With no token configured the node serves loopback only (see ``ronin serve``) and
every request is allowed."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ronin.api.state import node
from ronin.config import Scope
from ronin.errors import InsufficientScope, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="A token from RONIN_API_TOKENS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _scope_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Scope:
    tokens = node(request).settings.api_tokens
    if not tokens:
        return "write"
    if credentials is None:
        raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
    given = credentials.credentials.encode()
    scope: Scope | None = None
    for token in tokens:  # every token compared, in constant time, whatever matches
        if hmac.compare_digest(given, token.token.encode()):
            scope = token.scope
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

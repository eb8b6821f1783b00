"""Bearer tokens with a scope: every ``/v1`` route needs ``read``, a route that writes needs
``write``. With no token configured the node serves loopback only (see ``ronin serve``) and
every request is allowed.

The dashboard keeps the token a person logged in with in the ``ronin_session`` cookie
(HttpOnly, SameSite=Strict): a ``GET`` under ``/v1`` accepts it, so the pages' ``fetch`` and
``EventSource`` work, but no route that writes does (a cookie rides along with any request the
browser makes; a bearer header only with those the page's own code makes)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import cookie_parser
from starlette.types import Scope as ASGIScope

from ronin.api.state import node_of
from ronin.config import ApiToken, Scope
from ronin.errors import InsufficientScope, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="A token from RONIN_API_TOKENS.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
#: The dashboard's session cookie: the token, for the browser session.
SESSION_COOKIE = "ronin_session"
#: The methods a session cookie is accepted on: those that only read.
COOKIE_METHODS = frozenset({"GET", "HEAD"})


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
        if not given and scope.get("method") in COOKIE_METHODS:
            session = session_token(scope)
            return session is not None and token_scope(tokens, session) is not None
        if len(given) != 1:
            return False
        kind, _, token = given[0].decode("latin-1").partition(" ")
        return kind.lower() == "bearer" and token_scope(tokens, token.strip()) is not None

    return check


def authorization_headers(scope: ASGIScope) -> list[bytes]:
    """Every ``Authorization`` header of a request (HTTP allows one; a proxy may add another)."""
    return [value for name, value in scope["headers"] if name == b"authorization"]


def session_token(scope: ASGIScope) -> str | None:
    """The token in a request's session cookie, if it has one."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            token = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
            if token:
                return token
    return None


def _scope_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None, *, cookie: bool
) -> Scope:
    count = len(authorization_headers(request.scope))
    if count > 1:
        raise Unauthenticated(
            f"a request carries one Authorization header, not {count}: which one to judge "
            "would be a guess"
        )
    tokens = node_of(request).settings.api_tokens
    if not tokens:
        return "write"
    given = credentials.credentials if credentials is not None else None
    if given is None and cookie and count == 0 and request.method in COOKIE_METHODS:
        given = session_token(request.scope)
    if given is None:
        raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
    scope = token_scope(tokens, given)
    if scope is None:
        raise Unauthenticated("unknown token")
    return scope


async def require_read(request: Request, credentials: Credentials) -> None:
    """Any known token (on a GET, the session cookie's too)."""
    _scope_of(request, credentials, cookie=True)


async def require_write(request: Request, credentials: Credentials) -> None:
    """A token with the ``write`` scope, in the header: never the session cookie."""
    if _scope_of(request, credentials, cookie=False) != "write":
        raise InsufficientScope("this route needs a token with the write scope")

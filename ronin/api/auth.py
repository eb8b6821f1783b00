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
        token = bearer_token(given[0])
        return token is not None and token_scope(tokens, token) is not None

    return check


def bearer_token(authorization: bytes) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header's value, or None (another
    scheme, or no token): what FastAPI's ``HTTPBearer`` reads from it."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return token


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


def request_scope(scope: ASGIScope, tokens: Sequence[ApiToken], *, cookie: bool) -> Scope:
    """The scope a request's token grants (``write`` when the node has no tokens); with
    ``cookie``, a ``GET``'s session cookie counts too. ``Unauthenticated`` if it has none."""
    given = authorization_headers(scope)
    if len(given) > 1:
        raise Unauthenticated(
            f"a request carries one Authorization header, not {len(given)}: which one to "
            "judge would be a guess"
        )
    if not tokens:
        return "write"
    token = bearer_token(given[0]) if given else None
    if token is None and cookie and not given and scope.get("method") in COOKIE_METHODS:
        token = session_token(scope)
    if token is None:
        raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
    granted = token_scope(tokens, token)
    if granted is None:
        raise Unauthenticated("unknown token")
    return granted


def check_write(scope: ASGIScope, tokens: Sequence[ApiToken]) -> None:
    """Return if a request may write: a token with the ``write`` scope, in the header."""
    if request_scope(scope, tokens, cookie=False) != "write":
        raise InsufficientScope("this route needs a token with the write scope")


async def require_read(request: Request, credentials: Credentials) -> None:
    """Any known token (on a GET, the session cookie's too). ``credentials`` is there for
    the OpenAPI document's security scheme; the headers are read by ``request_scope``."""
    request_scope(request.scope, node_of(request).settings.api_tokens, cookie=True)


async def require_write(request: Request, credentials: Credentials) -> None:
    """A token with the ``write`` scope, in the header: never the session cookie."""
    check_write(request.scope, node_of(request).settings.api_tokens)

"""One error shape for every answer: ``{"error": {"code", "message", "field"?}}``.

A ``RoninError`` carries its own code and HTTP status; FastAPI's validation errors and
Starlette's HTTP errors are translated; a client that leaves before its body arrived is one
log line; anything else is logged once and answered with a bare ``INTERNAL`` error, never a
traceback, and never re-raised to the server (which would log it a second time).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ronin.errors import QueueFull, RoninError, Unauthenticated

logger = logging.getLogger(__name__)

_LOCATIONS = ("body", "query", "path", "header")
_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> Response:
    """An error answer in the one shape."""
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return Response(
        orjson.dumps({"error": detail}),
        status_code=status,
        media_type="application/json",
        headers=headers or None,
    )


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""
    app.add_exception_handler(RoninError, _ronin_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)


async def _ronin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoninError)
    return ronin_error_response(exc)


def ronin_error_response(exc: RoninError) -> Response:
    """The answer to a ``RoninError``: its status and code, and the headers it calls for."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after_s)
    return Response(
        orjson.dumps({"error": exc.as_dict()}),
        status_code=exc.http_status,
        media_type="application/json",
        headers=headers or None,
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    field = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return error_response(400, "INVALID_JSON", "the request body is not valid JSON")
    message = str(first.get("msg", "invalid request"))
    return error_response(422, "INVALID_VALUE", f"{field}: {message}" if field else message, field)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, code, str(exc.detail), **headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_response(request.scope)


def client_gone_response(scope: Scope) -> Response:
    """The answer (and the log line) when a client left before its request body arrived."""
    logger.info("%s %s: the client left before its request body arrived", *_line(scope))
    return error_response(400, "INCOMPLETE_BODY", "the request body ended before its length")


class CatchAll:
    """ASGI middleware, outermost: an exception no handler took is logged once, as this
    node's error, and answered ``500 INTERNAL`` in the one shape if nothing was sent yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            response = internal_error(scope, exc)
            if not started:
                await response(scope, receive, send)


def internal_error(scope: Scope, exc: Exception) -> Response:
    """Log an exception no handler took, once, and the answer to give if none was sent."""
    logger.error("%s %s failed", *_line(scope), exc_info=exc)
    return error_response(500, "INTERNAL", "internal error; the node's log has the details")


def _line(scope: Scope) -> tuple[str, str]:
    """Method and path of a request, printable on one log line."""
    path = str(scope.get("path", ""))[:200].encode("unicode_escape").decode("ascii")
    return str(scope.get("method", "")), path

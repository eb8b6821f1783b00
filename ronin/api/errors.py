"""One error shape for every answer: ``{"error": {"code", "message", "field"?}}``.

A ``RoninError`` carries its own code and HTTP status; FastAPI's validation errors and
Starlette's HTTP errors are translated; anything else is logged and answered with a bare
``INTERNAL`` error, never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ronin.errors import RoninError, Unauthenticated

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
    app.add_exception_handler(Exception, _unexpected_error)


async def _ronin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoninError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else {}
    return error_response(exc.http_status, exc.code, exc.message, exc.field, **headers)


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


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL", "internal error; the node's log has the details")

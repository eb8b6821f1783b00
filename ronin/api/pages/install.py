"""The dashboard in the app: its routes, and its errors as pages rather than JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError

from ronin.api.pages import jobs, login, map, overview
from ronin.api.pages.render import PAGE_HEADERS, error_page
from ronin.api.pages.session import LoginNeeded, PageRefused, login_location
from ronin.errors import RoninError

Handler = Callable[[Request, Exception], Awaitable[Response]]


def install(app: FastAPI) -> None:
    """Add the pages to ``app`` (after ``errors.install``: page errors wrap the API's)."""
    for module in (overview, map, jobs, login):
        app.include_router(module.router)
    app.add_exception_handler(LoginNeeded, _login_needed)
    app.add_exception_handler(PageRefused, _refused)
    for kind in (RoninError, RequestValidationError):
        api_handler = app.exception_handlers[kind]
        app.add_exception_handler(kind, _as_page(api_handler))


def is_page(request: Request) -> bool:
    """Whether ``request`` reached one of the dashboard's routes."""
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    return bool(endpoint and endpoint.__module__.startswith(__package__ or "ronin.api.pages"))


async def _login_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginNeeded)
    location = login_location(exc.next_path)
    return Response(status_code=303, headers={"Location": location, **PAGE_HEADERS})


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageRefused)
    return error_page(request, exc.status, exc.title, exc.message)


def _as_page(api_handler: Callable[..., object]) -> Handler:
    """The API's handler for API routes, an error page for the dashboard's."""

    async def handle(request: Request, exc: Exception) -> Response:
        if not is_page(request):
            answer = api_handler(request, exc)
            assert isinstance(answer, Awaitable)
            result = await answer
            assert isinstance(result, Response)
            return result
        if isinstance(exc, RoninError):
            return error_page(request, exc.http_status, "Error", exc.message)
        return error_page(request, 422, "Bad request", "a value of this page's address is invalid")

    return handle

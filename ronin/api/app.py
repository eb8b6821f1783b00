"""The ASGI app of one node: routes, the error shape, the body cap and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ronin import __version__
from ronin.api import errors
from ronin.api.auth import may_read
from ronin.api.cache import ReadCache
from ronin.api.direct_submit import DirectSubmit
from ronin.api.limits import BATCH_MAX_BODY_BYTES, MAX_BODY_BYTES, BodyLimit
from ronin.api.pages.install import install as install_pages
from ronin.api.routes import changes, descriptor, graph, health, jobs, klf, schedules, services
from ronin.api.state import NodeState
from ronin.config import Settings
from ronin.store.database import Database

#: Swagger UI's and the dashboard's files, the libraries fetched by scripts/fetch-assets and
#: shipped in the package (LICENSES.json says which versions, under which licences): /docs and
#: the dashboard need no internet.
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
SWAGGER_UI = f"{STATIC_PATH}/swagger-ui"

DESCRIPTION = """\
The HTTP API of a Ronin node, the scout of a kOS network: discovery jobs, the map of the
services they found, and KLF messages from other nodes.

Every `/v1` route needs a bearer token (`Authorization: Bearer ...`) when the node has
tokens configured; routes that write need one with the `write` scope. Every error answer has
the shape `{"error": {"code", "message", "field"?}}`.
"""


class NodeApp(FastAPI):
    """FastAPI, with ``POST /v1/jobs`` answered in front of its middleware stack, by
    ``direct_submit`` (``ronin.api.direct_submit`` says why)."""

    def __init__(self, direct_submit: DirectSubmit, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct_submit = direct_submit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct_submit.takes(scope):
            await self.direct_submit(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, database: Database, *, max_body_bytes: int = MAX_BODY_BYTES
) -> NodeApp:
    """The app on an open ``database``; its lifespan runs the job-events listener and the
    change-feed hub."""
    state = NodeState.on(settings, database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with state.events, state.hub:
            yield
        state.closing.set()
        await state.admission.close()

    app = NodeApp(
        DirectSubmit(state, max_body_bytes),
        title="Ronin",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below, from the package's own files
        redoc_url=None,
        # No redirect to the same path with(out) a slash: Starlette builds it from the Host
        # header, which the client chooses. An unknown path is a 404 in the one error shape.
        redirect_slashes=False,
    )
    app.state.node = state
    errors.install(app)
    app.add_middleware(
        BodyLimit, max_bytes=max_body_bytes, by_path={"/v1/jobs/batch": BATCH_MAX_BODY_BYTES}
    )
    app.add_middleware(
        ReadCache, ttl_s=settings.api_cache_s, authorized=may_read(settings.api_tokens)
    )
    app.add_middleware(errors.CatchAll)  # outermost: nothing escapes to the server's log
    for module in (jobs, services, graph, changes, klf, schedules, health, descriptor):
        app.include_router(module.router)
    install_pages(app)  # the dashboard, at /
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/docs", _docs, include_in_schema=False, response_class=HTMLResponse)
    return app


async def _docs(request: Request) -> HTMLResponse:
    """Swagger UI on this node's OpenAPI document, every file from this node."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API",
        swagger_js_url=f"{root}{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER_UI}/favicon-32x32.png",
        # Swagger UI would send the document to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )

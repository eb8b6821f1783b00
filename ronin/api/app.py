"""The ASGI app of one node: routes, the error shape, the body cap and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ronin import __version__
from ronin.api import errors
from ronin.api.auth import may_read
from ronin.api.cache import ReadCache
from ronin.api.limits import MAX_BODY_BYTES, BodyLimit
from ronin.api.routes import descriptor, health, jobs, klf, schedules, services
from ronin.api.state import NodeState
from ronin.config import Settings
from ronin.store.database import Database

DESCRIPTION = """\
The HTTP API of a Ronin node, the scout of a kOS network: discovery jobs, the map of the
services they found, and KLF messages from other nodes.

Every `/v1` route needs a bearer token (`Authorization: Bearer ...`) when the node has
tokens configured; routes that write need one with the `write` scope. Every error answer has
the shape `{"error": {"code", "message", "field"?}}`.
"""


def create_app(
    settings: Settings, database: Database, *, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The app on an open ``database``; its lifespan runs the job-events listener."""
    state = NodeState.on(settings, database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with state.events:
            yield
        state.closing.set()

    app = FastAPI(
        title="Ronin",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.node = state
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(
        ReadCache, ttl_s=settings.api_cache_s, authorized=may_read(settings.api_tokens)
    )
    for module in (jobs, services, klf, schedules, health, descriptor):
        app.include_router(module.router)
    return app

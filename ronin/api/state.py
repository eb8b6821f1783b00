"""What every route of one node shares, kept on ``app.state.node``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from ronin.config import Settings
from ronin.discovery.policy import ScopePolicy
from ronin.jobs.follow import JobEvents
from ronin.store.database import Database
from ronin.store.jobs import JobStore
from ronin.store.services import ServiceMap


@dataclass
class NodeState:
    """The node's settings, database, stores and the one job-events listener."""

    settings: Settings
    database: Database
    jobs: JobStore
    services: ServiceMap
    events: JobEvents
    policy: ScopePolicy
    #: Set when the server shuts down: live event streams end so connections can close.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def on(cls, settings: Settings, database: Database) -> NodeState:
        return cls(
            settings=settings,
            database=database,
            jobs=JobStore(database.pool),
            services=ServiceMap(database.pool, freshness_window=settings.freshness_window),
            events=JobEvents(database.conninfo),
            policy=ScopePolicy.from_settings(settings),
        )


def node_of(request: Request) -> NodeState:
    """The node a request reached."""
    state: NodeState = request.app.state.node
    return state


async def node(request: Request) -> NodeState:
    """``node_of`` as a dependency (async, so FastAPI does not hand it to a thread)."""
    return node_of(request)

"""What every route of one node shares, kept on ``app.state.node``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from ronin.config import Settings
from ronin.discovery.policy import ScopePolicy
from ronin.jobs.admission import PendingGauge
from ronin.jobs.follow import JobEvents
from ronin.node import Node
from ronin.store.change_hub import ChangeHub
from ronin.store.database import Database
from ronin.store.jobs import JobStore
from ronin.store.services import ServiceMap


@dataclass
class NodeState:
    """The node (``ronin.node``) and what only the API adds: the one job-events listener and
    the one change-feed hub."""

    node: Node
    events: JobEvents
    #: The one reader of the change feed every stream of this process shares.
    hub: ChangeHub
    #: Back-pressure: the estimate of pending jobs every submission is checked against.
    admission: PendingGauge
    #: Set when the server shuts down: live event streams end so connections can close.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def on(cls, settings: Settings, database: Database) -> NodeState:
        return cls.of(Node.on(settings, database))

    @classmethod
    def of(cls, node: Node) -> NodeState:
        """The API's state around an opened ``node``."""
        return cls(
            node=node,
            events=JobEvents(node.database.conninfo),
            hub=node.change_hub(),
            admission=PendingGauge(node.jobs, limit=node.settings.max_pending_jobs),
        )

    @property
    def settings(self) -> Settings:
        return self.node.settings

    @property
    def database(self) -> Database:
        return self.node.database

    @property
    def jobs(self) -> JobStore:
        return self.node.jobs

    @property
    def services(self) -> ServiceMap:
        return self.node.services

    @property
    def policy(self) -> ScopePolicy:
        return self.node.policy


def node_of(request: Request) -> NodeState:
    """The node a request reached."""
    state: NodeState = request.app.state.node
    return state


async def node(request: Request) -> NodeState:
    """``node_of`` as a dependency (async, so FastAPI does not hand it to a thread)."""
    return node_of(request)

"""One node opened from its settings: the stores, the scope policy, submissions and workers.

Every entry point (the API, the CLI's local backend, ``serve``, ``worker``, ``discover``)
builds its node here, so a new setting changes one place. The worker and the discovery
executor are imported only when a worker is made: the reading commands never load them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ronin.config import Settings
from ronin.discovery.policy import ScopePolicy
from ronin.store.changes import ChangeFeed
from ronin.store.database import Database, open_database
from ronin.store.jobs import JobStore
from ronin.store.services import ServiceMap

if TYPE_CHECKING:
    from ronin.jobs.executor import Executor
    from ronin.jobs.grouping import GroupCommit
    from ronin.jobs.submit import Outcome
    from ronin.jobs.verifier import Verifier
    from ronin.jobs.worker import Worker
    from ronin.store.change_hub import ChangeHub
    from ronin.store.job_models import Job, Schedule


@dataclass(frozen=True)
class Node:
    """The node's settings, database, stores and scope policy."""

    settings: Settings
    database: Database
    jobs: JobStore
    services: ServiceMap
    policy: ScopePolicy
    #: The change feed (PROTOCOL.md section 9).
    changes: ChangeFeed

    @classmethod
    def on(cls, settings: Settings, database: Database) -> Node:
        """The node on an open ``database``."""
        return cls(
            settings=settings,
            database=database,
            jobs=JobStore(database.pool),
            services=service_map(database, settings),
            policy=ScopePolicy.from_settings(settings),
            changes=ChangeFeed(database.pool),
        )

    def change_hub(self) -> ChangeHub:
        """A reader of the feed for this process's streams (one per process is enough)."""
        from ronin.store.change_hub import ChangeHub

        return ChangeHub(self.changes, self.database.conninfo)

    async def submit(self, params: Any, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Validate and queue a job with this node's attempts and scope; True if new.

        Without an idempotency key, concurrent submissions are written together (group
        commit, ``ronin.jobs.grouping``); each still gets its own job.
        """
        from ronin.jobs.submit import checked, submit_job  # not for the reading commands

        if idempotency_key is not None:
            return await submit_job(
                self.jobs,
                params,
                max_attempts=self.settings.job_max_attempts,
                idempotency_key=idempotency_key,
                policy=self.policy,
            )
        return await self.group_commit.insert(checked(params, None, self.policy)), True

    async def submit_many(self, items: Sequence[tuple[Any, str | None]]) -> list[Outcome]:
        """Validate each ``(params, idempotency_key)`` on its own and queue the valid ones in
        one statement: per item, in order, the job and whether it is new, or the error that
        refused it."""
        from ronin.jobs.submit import submit_jobs  # job params: not for the reading commands

        return await submit_jobs(
            self.jobs, items, max_attempts=self.settings.job_max_attempts, policy=self.policy
        )

    @cached_property
    def group_commit(self) -> GroupCommit:
        """The writer of this node's single submissions, in groups."""
        from ronin.jobs.grouping import GroupCommit

        return GroupCommit(self.jobs, max_attempts=self.settings.job_max_attempts)

    async def add_schedule(self, name: str, params: Any, interval_s: int) -> Schedule:
        """Register a recurring discovery, its params checked against this node's scope."""
        from ronin.jobs.submit import add_schedule  # job params: not for the reading commands

        return await add_schedule(self.jobs, name, params, interval_s, policy=self.policy)

    def worker(
        self,
        *,
        concurrency: int,
        executor: str | Executor | None = None,
        database: Database | None = None,
    ) -> Worker:
        """A worker of this node, on ``database`` (its own pool) or the node's.

        ``executor``: a ``module:attribute`` reference, an executor already made, or None for
        the discovery executor.
        """
        from ronin.jobs.worker import Worker, WorkerOptions  # not for the reading commands

        run_job = executor if callable(executor) else job_executor(self.settings, executor)
        on = database or self.database
        return Worker(
            conninfo=self.database.conninfo,
            store=self.jobs if database is None else JobStore(on.pool),
            services=self.services if database is None else service_map(on, self.settings),
            executor=run_job,
            options=WorkerOptions.from_settings(self.settings, concurrency),
            changes=self.changes if database is None else ChangeFeed(on.pool),
        )

    def verifier(
        self, *, database: Database | None = None, worker_id: str | None = None
    ) -> AbstractAsyncContextManager[Verifier | None]:
        """This node's verifier (PROTOCOL.md section 8), on ``database`` (its own pool) or the
        node's, open while in the ``async with``; None when RONIN_VERIFY_INTERVAL_S is 0."""
        from ronin.jobs.verifying import open_verifier  # the probe stack: not for reading

        on = database or self.database
        services = self.services if database is None else service_map(on, self.settings)
        return open_verifier(self.settings, on, services, self.policy, worker_id=worker_id)


def load_worker_stack() -> None:
    """Import what ``Node.worker`` runs (the worker, the discovery executor and its HTTP
    client) ahead of time: ``discover --wait`` does it while the embedded server starts
    rather than after."""
    import ronin.jobs.discovery_executor
    import ronin.jobs.worker  # noqa: F401


def job_executor(settings: Settings, reference: str | None = None) -> Executor:
    """The executor named by ``reference`` (tests' ``--executor``), else discovery's."""
    if reference:
        from ronin.jobs.executor import load_executor

        return load_executor(reference)
    from ronin.jobs.discovery_executor import discovery_executor  # the discovery stack

    return discovery_executor(settings)


def service_map(database: Database, settings: Settings) -> ServiceMap:
    """The map on ``database``, with the configured freshness window."""
    return ServiceMap(database.pool, freshness_window=settings.freshness_window)


@asynccontextmanager
async def open_node(
    settings: Settings, *, migrate: bool | None = None, for_worker: bool = False
) -> AsyncIterator[Node]:
    """Open the database (``open_database``'s ``migrate`` and ``for_worker``) as a node."""
    async with await open_database(settings, migrate=migrate, for_worker=for_worker) as database:
        yield Node.on(settings, database)

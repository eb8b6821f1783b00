"""What the worker loop and a job's context need of the queue, the map and the wake-ups.

``JobStore``, ``ServiceMap`` and ``Listener`` satisfy these protocols structurally; a unit test
gives the worker in-memory ones instead, and runs the loop with no database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ronin.store.job_models import ClaimedJob
from ronin.store.jobs import Finish
from ronin.store.listen import Notification
from ronin.store.models import Page, ServiceFilter, Sighting, UpsertResult

#: Given the channels to hear, the endless notifications on them (``Listener`` on a
#: connection string, by default).
Wakeups = Callable[[Sequence[str]], AsyncIterable[Notification]]


class FinishQueue(Protocol):
    """The one write ``FinishBatcher`` makes: many jobs' final writes at once."""

    async def finish_many(self, items: Sequence[Finish]) -> set[uuid.UUID]:
        """End jobs; the ids actually ended (a job whose lease was lost is not among them)."""
        ...


class AttemptQueue(Protocol):
    """The lease-guarded writes a job's context makes during an attempt."""

    async def record_progress(
        self, job: ClaimedJob, progress: int, message: str, checkpoint: dict[str, Any] | None
    ) -> bool:
        """Store progress and a checkpoint; False if the lease is lost."""
        ...

    async def link_services(
        self, job: ClaimedJob, service_ids: Sequence[str], outcomes: Sequence[str]
    ) -> None:
        """Remember which services this job found (new) or refreshed."""
        ...


class JobQueue(FinishQueue, AttemptQueue, Protocol):
    """Everything the worker loop does with the queue: claim, renew (and hear of a cancel),
    requeue, finish, and the housekeeping of schedules and retention."""

    async def claim(
        self,
        worker_id: str,
        *,
        batch: int,
        lease: timedelta,
        job_id: uuid.UUID | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``batch`` jobs (or only ``job_id``) for ``worker_id``."""
        ...

    async def renew_lease(self, job: ClaimedJob, lease: timedelta) -> tuple[bool, datetime] | None:
        """Extend the lease; (cancel requested, new expiry), or None if the lease is lost."""
        ...

    async def requeue(
        self, job: ClaimedJob, *, outcome: str, delay: timedelta, error: dict[str, Any] | None
    ) -> bool:
        """Back to pending (``retry``: the attempt spent; ``released``: given back)."""
        ...

    async def enqueue_due_schedules(self, *, max_attempts: int) -> list[uuid.UUID]:
        """Create the job of every schedule whose period has come."""
        ...

    async def prune(self, cutoff: datetime) -> int:
        """Delete jobs that finished before ``cutoff``."""
        ...


class JobServices(Protocol):
    """What a job's executor does with the map: write sightings and peer links, and look
    services up."""

    async def upsert(self, sightings: Iterable[Sighting]) -> UpsertResult:
        """Write sightings; what became of each."""
        ...

    async def find(
        self, where: ServiceFilter = ..., *, limit: int = ..., cursor: str | None = ...
    ) -> Page:
        """One page of the services matching ``where``."""
        ...

    async def record_links(self, job_id: str, links: Iterable[tuple[str, str]]) -> int:
        """Write a job's peer links (referrer node_id, peer node_id); how many were written."""
        ...


class ChangeLog(Protocol):
    """The change feed, as housekeeping sees it: something to prune."""

    async def prune(self, older_than: timedelta, *, batch: int = ...) -> int:
        """Delete changes older than ``older_than``; how many went."""
        ...


if TYPE_CHECKING:
    from ronin.store.changes import ChangeFeed
    from ronin.store.jobs import JobStore
    from ronin.store.services import ServiceMap

    def _the_stores_conform(store: JobStore, services: ServiceMap, changes: ChangeFeed) -> None:
        """Checked by mypy only: the real queue and map are what the worker asks for."""
        queue: JobQueue = store
        attempts: AttemptQueue = store
        finishes: FinishQueue = store
        writes: JobServices = services
        log: ChangeLog = changes
        del queue, attempts, finishes, writes, log

"""Group commit of single submissions: jobs submitted one per request, concurrently, are
written together, one statement for as many as arrived while the last one was in flight.

There is no timer: a submission arriving at an idle node is written at once (alone, by the
one-job statement), so grouping costs a quiet node nothing; under load, the requests that
arrive while a group's statement runs gather and go in the next one, so each statement (a
round trip, a commit, a plan) is shared by many jobs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ronin.store.job_models import Job
from ronin.store.jobs import JobStore

#: At most this many jobs in one statement; more waiting go in the next.
MAX_GROUP = 1000


class GroupCommit:
    """Writes submissions without an idempotency key in groups; each gets its own job."""

    def __init__(self, store: JobStore, *, max_attempts: int, max_group: int = MAX_GROUP) -> None:
        self._store = store
        self._max_attempts = max_attempts
        self._max_group = max_group
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[Job]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Statements made and jobs written by them, for the benchmark and the tests.
        self.statements = 0
        self.jobs = 0

    async def insert(self, params: dict[str, Any]) -> Job:
        """Queue ``params`` (already validated) as a new pending job with the next group."""
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiting.append((params, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_groups(), name="job group commit")
        return await future

    async def _write_groups(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                await self._write(group)
        finally:
            self._writer = None

    async def _write(self, group: list[tuple[dict[str, Any], asyncio.Future[Job]]]) -> None:
        try:
            if len(group) == 1:
                job, _ = await self._store.insert(group[0][0], max_attempts=self._max_attempts)
                jobs = [job]
            else:
                written = await self._store.insert_many(
                    [params for params, _ in group], max_attempts=self._max_attempts
                )
                jobs = [job for job, _ in written]
        except Exception as exc:  # every request of the group gets the failure (a 503)
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.statements += 1
        self.jobs += len(jobs)
        for (_, future), job in zip(group, jobs, strict=True):
            if not future.done():  # (its request may have gone; its job stays)
                future.set_result(job)

"""The worker loop: claim jobs, run them under a renewed lease, and end each exactly once.

A worker claims as many jobs as it has free slots, in one statement; wakes on NOTIFY
``ronin_jobs`` but polls anyway (a notification is a hint, never the truth); renews each
job's lease by heartbeat; stops a job when it is cancelled or its lease is lost; and on
shutdown stops claiming, gives running jobs a grace period, then hands them back to the queue
without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ronin import metrics
from ronin.config import Settings
from ronin.discovery.params import parse_params
from ronin.errors import (
    DatabaseError,
    JobTimedOut,
    RoninError,
    ScanFailed,
    TransientFailure,
)
from ronin.jobs.backoff import retry_delay
from ronin.jobs.batching import FinishBatcher
from ronin.jobs.context import JobContext, LeaseLost, Outcome
from ronin.jobs.executor import Executor
from ronin.jobs.queue_protocol import ChangeLog, JobQueue, JobServices, Wakeups
from ronin.jobs.waits import wait_any
from ronin.store.job_models import ClaimedJob, JobStatus
from ronin.store.jobs import CANCELLED_ERROR, Finish
from ronin.store.listen import Listener, Notification

logger = logging.getLogger(__name__)

CHANNELS = ("ronin_jobs", "ronin_job_cancel")
SCHEDULE_CHECK_INTERVAL_S = 5.0
CLAIM_LINGER_S = 0.002
RETENTION_CHECK_INTERVAL_S = 600.0
MAX_RECONNECT_DELAY_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker paces itself; the defaults come from ``Settings``."""

    concurrency: int = 4
    lease: timedelta = timedelta(seconds=15)
    poll_interval: timedelta = timedelta(seconds=2)
    shutdown_grace: timedelta = timedelta(seconds=10)
    job_timeout: timedelta = timedelta(hours=2)
    job_retention: timedelta = timedelta(days=30)
    changes_retention: timedelta = timedelta(hours=24)
    max_attempts: int = 5
    retry_base: timedelta = timedelta(seconds=2)

    @property
    def heartbeat_interval(self) -> timedelta:
        # Three heartbeats per lease: one lost heartbeat does not lose the job.
        return self.lease / 3

    @classmethod
    def from_settings(cls, settings: Settings, concurrency: int) -> WorkerOptions:
        return cls(
            concurrency=concurrency,
            lease=settings.job_lease,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.shutdown_grace,
            job_timeout=settings.job_timeout,
            job_retention=settings.job_retention,
            changes_retention=settings.changes_retention,
            max_attempts=settings.job_max_attempts,
        )


def new_worker_id() -> str:
    """hostname:pid:random, so an operator can tell which machine ran what."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _RunningJob:
    """A claimed job in this worker, and why it was stopped, if it was."""

    def __init__(self, job: ClaimedJob, lease_s: float) -> None:
        self.job = job
        self.stop_reason: str | None = None
        self.executor_task: asyncio.Task[Outcome] | None = None
        self.lease_deadline = time.monotonic() + lease_s
        self.claimed_at = time.monotonic()

    def describe(self) -> str:
        """``job <id> (<target>)``, for the log."""
        target = self.job.params.get("target")
        value = target.get("value") if isinstance(target, dict) else None
        return f"job {self.job.job_id} ({value or 'no target'})"

    def seconds(self) -> float:
        """How long this attempt has run so far."""
        return time.monotonic() - self.claimed_at

    def stop(self, reason: str) -> None:
        """Stop the executor; the first reason given is the one acted on."""
        if self.stop_reason is None:
            self.stop_reason = reason
            if self.executor_task is not None:
                self.executor_task.cancel()


class Worker:
    """Runs jobs from the shared queue, ``options.concurrency`` at a time."""

    def __init__(
        self,
        *,
        conninfo: str,
        store: JobQueue,
        services: JobServices,
        executor: Executor,
        options: WorkerOptions,
        worker_id: str | None = None,
        wakeups: Wakeups | None = None,
        changes: ChangeLog | None = None,
    ) -> None:
        """``wakeups`` hears of new and cancelled jobs: by default a ``Listener`` on
        ``conninfo``; a test gives its own."""
        self.worker_id = worker_id or new_worker_id()
        self.options = options
        self._wakeups = wakeups or _listener_on(conninfo)
        self._store = store
        self._services = services
        self._changes = changes
        self._executor = executor
        self._running: dict[uuid.UUID, _RunningJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finisher = FinishBatcher(store)
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._next_schedule_check = 0.0
        self._next_retention_check = 0.0

    @property
    def running(self) -> int:
        return len(self._running)

    def hurry(self) -> None:
        """Skip the rest of the shutdown grace period (a second signal)."""
        self._hurry.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then shut down gracefully."""
        logger.info("worker %s started (%d slots)", self.worker_id, self.options.concurrency)
        listener = asyncio.create_task(self._listen(), name=f"listener {self.worker_id}")
        delay = 0.1
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._housekeeping()
                    claimed = await self._claim()
                    delay = 0.1
                except DatabaseError as exc:
                    logger.warning("worker %s cannot reach the database: %s", self.worker_id, exc)
                    claimed = []
                    await wait_any(stop, timeout_s=delay)
                    delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
                    continue
                free = self.options.concurrency - self.running
                if claimed and free > 0:
                    continue  # there may be more waiting
                await wait_any(stop, self._wake, timeout_s=self._poll_s())
                if self.running:
                    # A busy worker lets a few more slots free up, to claim them in one
                    # statement; an idle one claims at once.
                    await asyncio.sleep(CLAIM_LINGER_S)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await self._shut_down()
        logger.info("worker %s stopped", self.worker_id)

    async def run_one(self, job_id: uuid.UUID) -> bool:
        """Claim ``job_id`` and run it to its end here; False if another worker has it."""
        claimed = await self._store.claim(
            self.worker_id, batch=1, lease=self.options.lease, job_id=job_id
        )
        if not claimed:
            return False
        running = _RunningJob(claimed[0], self.options.lease.total_seconds())
        self._running[job_id] = running
        await self._run_job(running)
        return True

    def release_all(self) -> None:
        """Hand every running job back to the queue (the process is being interrupted)."""
        for running in list(self._running.values()):
            running.stop("shutdown")

    async def _claim(self) -> list[ClaimedJob]:
        free = self.options.concurrency - self.running
        if free <= 0:
            return []
        with metrics.CLAIM_SECONDS.time():
            claimed = await self._store.claim(self.worker_id, batch=free, lease=self.options.lease)
        metrics.JOBS_CLAIMED.inc(len(claimed))
        for job in claimed:
            running = _RunningJob(job, self.options.lease.total_seconds())
            self._running[job.job_id] = running
            task = asyncio.create_task(self._run_job(running), name=f"job {job.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._job_done)
        return claimed

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("job task failed", exc_info=task.exception())

    async def _run_job(self, running: _RunningJob) -> None:
        """One attempt of one job, from claim to its single final write."""
        job = running.job
        try:
            if job.cancel_requested:
                await self._finish(running, "failed", error=CANCELLED_ERROR)
                return
            if job.attempt > job.max_attempts:
                error = ScanFailed.gave_up(job.max_attempts).to_payload()
                await self._finish(running, "failed", error=error)
                return
            logger.info(
                "%s started: attempt %d of %d on %s",
                running.describe(),
                job.attempt,
                job.max_attempts,
                self.worker_id,
            )
            context = JobContext(job, parse_params(job.params), self._store, self._services)
            running.executor_task = asyncio.create_task(
                self._execute(context), name=f"executor {job.job_id}"
            )
            heartbeat = asyncio.create_task(self._heartbeat(running), name=f"hb {job.job_id}")
            try:
                await asyncio.wait({running.executor_task})
            finally:
                heartbeat.cancel()
                running.executor_task.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await self._conclude(running, context)
        except RoninError as exc:
            await self._fail_or_retry(running, exc)
        finally:
            self._running.pop(job.job_id, None)

    async def _execute(self, context: JobContext) -> Outcome:
        async with asyncio.timeout(self.options.job_timeout.total_seconds()):
            return await self._executor(context)

    async def _conclude(self, running: _RunningJob, context: JobContext) -> None:
        """Turn how the executor ended into the job's one final write."""
        job, task = running.job, running.executor_task
        assert task is not None
        if task.cancelled():
            if running.stop_reason == "cancelled":
                await self._finish(
                    running, "failed", error=CANCELLED_ERROR, result=context.result(None).to_json()
                )
            elif running.stop_reason == "shutdown":
                await self._persist(
                    running,
                    lambda: self._store.requeue(
                        job, outcome="released", delay=timedelta(0), error=None
                    ),
                )
                logger.info(
                    "%s handed back to the queue after %.1fs (this worker is stopping)",
                    running.describe(),
                    running.seconds(),
                )
            else:
                logger.warning("job %s: lease lost; another worker will take it", job.job_id)
            return
        error = task.exception()
        if error is None:
            await self._finish(running, "completed", result=context.result(task.result()).to_json())
        elif isinstance(error, LeaseLost):
            logger.warning("job %s: lease lost; another worker will take it", job.job_id)
        elif isinstance(error, TimeoutError):
            timed_out = JobTimedOut(self.options.job_timeout)
            await self._fail_or_retry(running, timed_out, context=context)
        else:
            await self._fail_or_retry(running, error, context=context)

    async def _finish(
        self,
        running: _RunningJob,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """The job's final write, batched with other jobs' and retried through outages."""
        item = Finish(running.job, status, result, error)
        await self._persist(running, lambda: self._finisher.finish(item))
        why = f" ({error['code']}: {error['message']})" if error else ""
        logger.info("%s ended %s%s after %.1fs", running.describe(), status, why, running.seconds())

    async def _fail_or_retry(
        self,
        running: _RunningJob,
        error: BaseException,
        context: JobContext | None = None,
    ) -> None:
        """Permanent failures end the job (with what it counted on the way: failed probes,
        conflicts); transient ones retry after a backoff, up to the job's maximum attempts."""
        job = running.job
        failure = TransientFailure.of(error)
        message = failure.message
        if failure.permanent or job.attempt >= job.max_attempts:
            final = failure if failure.permanent else ScanFailed.gave_up(job.attempt, message)
            result = context.result(None).to_json() if context is not None else None
            await self._finish(running, "failed", error=final.to_payload(), result=result)
            return
        delay = retry_delay(job.attempt, base=self.options.retry_base)
        logger.warning(
            "job %s: attempt %d failed (%s); retry in %.1fs",
            job.job_id,
            job.attempt,
            message,
            delay.total_seconds(),
        )
        attempt_error = failure.to_payload()
        await self._persist(
            running,
            lambda: self._store.requeue(job, outcome="retry", delay=delay, error=attempt_error),
        )

    async def _heartbeat(self, running: _RunningJob) -> None:
        """Renew the lease every third of it; stop the job if it is cancelled or lost."""
        interval = self.options.heartbeat_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self._store.renew_lease(running.job, self.options.lease)
            except DatabaseError as exc:
                logger.warning("job %s: heartbeat failed: %s", running.job.job_id, exc)
                if time.monotonic() >= running.lease_deadline:
                    running.stop("lost")
                    return
                continue
            if renewed is None:
                running.stop("lost")
                return
            running.lease_deadline = time.monotonic() + self.options.lease.total_seconds()
            if renewed[0]:
                running.stop("cancelled")
                return

    async def _persist(self, running: _RunningJob, write: Callable[[], Awaitable[bool]]) -> None:
        """Make a final write, retrying through database outages while the lease lasts."""
        delay = 0.1
        while True:
            try:
                if not await write():
                    logger.warning("job %s: lease lost before its final write", running.job.job_id)
                return
            except DatabaseError as exc:
                if time.monotonic() >= running.lease_deadline:
                    logger.warning(
                        "job %s: final write failed, lease expired: %s", running.job.job_id, exc
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _housekeeping(self) -> None:
        """Create due scheduled jobs and prune old ones, each on its own period."""
        now = time.monotonic()
        if now >= self._next_schedule_check:
            self._next_schedule_check = now + SCHEDULE_CHECK_INTERVAL_S
            created = await self._store.enqueue_due_schedules(
                max_attempts=self.options.max_attempts
            )
            if created:
                logger.info("scheduled %d job(s)", len(created))
        if now >= self._next_retention_check:
            self._next_retention_check = now + RETENTION_CHECK_INTERVAL_S
            cutoff = datetime.now(UTC) - self.options.job_retention
            pruned = await self._store.prune(cutoff)
            if pruned:
                logger.info("pruned %d finished job(s) older than %s", pruned, cutoff)
            if self._changes is not None:
                retention = self.options.changes_retention
                dropped = await self._changes.prune(retention)
                if dropped:
                    logger.info("pruned %d change(s) older than %s", dropped, retention)

    async def _listen(self) -> None:
        """Wake on new jobs and stop cancelled ones; reconnect whenever the server goes."""
        async for note in self._wakeups(CHANNELS):
            if note.reconnected:
                self._wake.set()  # anything submitted while we were away
            else:
                self._on_notification(note.channel, note.payload)

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == "ronin_jobs":
            self._wake.set()
        elif channel == "ronin_job_cancel":
            with contextlib.suppress(ValueError):
                running = self._running.get(uuid.UUID(payload))
                if running is not None:
                    running.stop("cancelled")

    async def _shut_down(self) -> None:
        """Let running jobs finish within the grace period, then hand the rest back."""
        deadline = time.monotonic() + self.options.shutdown_grace.total_seconds()
        if self._tasks:
            logger.info(
                "waiting up to %s for %d job(s)", self.options.shutdown_grace, len(self._tasks)
            )
        while self._tasks and not self._hurry.is_set() and time.monotonic() < deadline:
            self._wake.clear()
            await wait_any(self._hurry, self._wake, timeout_s=deadline - time.monotonic())
        for running in list(self._running.values()):
            running.stop("shutdown")
        if self._tasks:
            # Releasing is a write or two each; bounded all the same.
            await asyncio.wait(list(self._tasks), timeout=self.options.lease.total_seconds())

    def _poll_s(self) -> float:
        return self.options.poll_interval.total_seconds()


def _listener_on(conninfo: str) -> Wakeups:
    """The default wake-ups: LISTEN on ``conninfo``, reconnecting with a bounded backoff."""

    def listen(channels: Sequence[str]) -> AsyncIterable[Notification]:
        return Listener(conninfo, channels, max_delay_s=MAX_RECONNECT_DELAY_S)

    return listen

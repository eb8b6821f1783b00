"""The worker loop with no database: an in-memory queue with leases and attempts, fake
executors and injected wake-ups. Jobs end exactly once, retry, stop when cancelled or lost,
are handed back at shutdown, and never run more than ``concurrency`` at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ronin.errors import ScanFailed, TransientFailure
from ronin.jobs.context import JobContext, Outcome
from ronin.jobs.executor import Executor
from ronin.jobs.queue_protocol import JobQueue, JobServices
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.job_models import ClaimedJob, JobStatus
from ronin.store.jobs import Finish
from ronin.store.listen import Notification
from ronin.store.models import Page, ServiceFilter, Sighting, UpsertResult
from ronin.store.services import EVERY_SERVICE

OPTIONS = WorkerOptions(
    concurrency=2,
    lease=timedelta(seconds=0.3),  # a heartbeat every 0.1 s; the fake's leases never lapse
    poll_interval=timedelta(seconds=0.01),
    shutdown_grace=timedelta(seconds=30),
    retry_base=timedelta(seconds=0.001),
)
BOUND_S = 30  # how long a test waits for what must happen: a hang, not a threshold


def params(name: str = "job") -> dict[str, Any]:
    """Valid job params (the worker parses them before running the executor)."""
    return {"target": {"type": "did", "value": f"did:kos:test:{name}"}, "protocols": ["http-api"]}


@dataclass
class QueuedJob:
    """One job in the fake queue, as the database would hold it."""

    job_id: uuid.UUID
    params: dict[str, Any]
    max_attempts: int
    status: JobStatus = "pending"
    attempts: int = 0
    lease_token: uuid.UUID | None = None
    run_after: float = 0.0
    cancel_requested: bool = False
    outcomes: list[str] = field(default_factory=list)
    errors: list[dict[str, Any] | None] = field(default_factory=list)
    result: dict[str, Any] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class FakeQueue:
    """An honest in-memory queue: a claim spends an attempt and hands out a fresh lease token;
    every write of an attempt needs that token; ``released`` gives the attempt back. A lease is
    lost only when a test says so (``steal``), never by the clock."""

    def __init__(self) -> None:
        self.jobs: dict[uuid.UUID, QueuedJob] = {}
        self.due: list[dict[str, Any]] = []
        self.claim_batches: list[int] = []
        self.claimed = asyncio.Event()
        self.schedule_checks: list[int] = []
        self.prune_cutoffs: list[datetime] = []
        self.finished: list[uuid.UUID] = []
        #: Every final write the worker tried (ended or requeued), lease held or not.
        self.final_writes: list[uuid.UUID] = []
        self.renewed = asyncio.Event()

    def submit(self, name: str = "job", *, max_attempts: int = 3) -> uuid.UUID:
        job = QueuedJob(uuid.uuid4(), params(name), max_attempts)
        self.jobs[job.job_id] = job
        return job.job_id

    def steal(self, job_id: uuid.UUID) -> None:
        """Another worker has this job now (its lease lapsed and it was re-claimed)."""
        self.jobs[job_id].lease_token = uuid.uuid4()

    def request_cancel(self, job_id: uuid.UUID) -> None:
        self.jobs[job_id].cancel_requested = True

    async def ended(self, job_id: uuid.UUID) -> QueuedJob:
        job = self.jobs[job_id]
        await asyncio.wait_for(job.ended.wait(), BOUND_S)
        return job

    def _held(self, claimed: ClaimedJob) -> QueuedJob | None:
        job = self.jobs.get(claimed.job_id)
        ok = job is not None and job.status == "running" and job.lease_token == claimed.lease_token
        return job if ok else None

    async def claim(
        self, worker_id: str, *, batch: int, lease: timedelta, job_id: uuid.UUID | None = None
    ) -> list[ClaimedJob]:
        self.claim_batches.append(batch)
        self.claimed.set()
        now = asyncio.get_running_loop().time()
        ready = [
            j
            for j in self.jobs.values()
            if j.status == "pending" and j.run_after <= now and job_id in (None, j.job_id)
        ]
        claimed = []
        for job in ready[:batch]:
            job.status, job.attempts, job.lease_token = "running", job.attempts + 1, uuid.uuid4()
            claimed.append(
                ClaimedJob(
                    job_id=job.job_id,
                    params=job.params,
                    lease_token=job.lease_token,
                    attempt=job.attempts,
                    max_attempts=job.max_attempts,
                    checkpoint=None,
                    cancel_requested=job.cancel_requested,
                    lease_expires_at=datetime.now(UTC) + lease,
                )
            )
        return claimed

    async def renew_lease(self, job: ClaimedJob, lease: timedelta) -> tuple[bool, datetime] | None:
        self.renewed.set()
        held = self._held(job)
        return None if held is None else (held.cancel_requested, datetime.now(UTC) + lease)

    async def record_progress(
        self, job: ClaimedJob, progress: int, message: str, checkpoint: dict[str, Any] | None
    ) -> bool:
        return self._held(job) is not None

    async def link_services(
        self, job: ClaimedJob, service_ids: Sequence[str], outcomes: Sequence[str]
    ) -> None:
        """Nothing to link: the fake map records nothing."""

    async def finish_many(self, items: Sequence[Finish]) -> set[uuid.UUID]:
        ended = set()
        for item in items:
            self.final_writes.append(item.job.job_id)
            held = self._held(item.job)
            if held is None:
                continue
            held.status, held.lease_token, held.result = item.status, None, item.result
            held.outcomes.append(item.status)
            held.errors.append(item.error)
            self.finished.append(held.job_id)
            held.ended.set()
            ended.add(held.job_id)
        return ended

    async def requeue(
        self, job: ClaimedJob, *, outcome: str, delay: timedelta, error: dict[str, Any] | None
    ) -> bool:
        self.final_writes.append(job.job_id)
        held = self._held(job)
        if held is None:
            return False
        held.status, held.lease_token = "pending", None
        held.run_after = asyncio.get_running_loop().time() + delay.total_seconds()
        if outcome == "released":
            held.attempts -= 1
        held.outcomes.append(outcome)
        held.errors.append(error)
        return True

    async def enqueue_due_schedules(self, *, max_attempts: int) -> list[uuid.UUID]:
        self.schedule_checks.append(max_attempts)
        created = [self.submit(p["target"]["value"], max_attempts=max_attempts) for p in self.due]
        for job_id, job_params in zip(created, self.due, strict=True):
            self.jobs[job_id].params = job_params
        self.due = []
        return created

    async def prune(self, cutoff: datetime) -> int:
        self.prune_cutoffs.append(cutoff)
        return 0


class FakeServices:
    """A map with nothing in it."""

    async def record_links(self, job_id: str, links: Iterable[tuple[str, str]]) -> int:
        return 0

    async def upsert(self, sightings: Iterable[Sighting]) -> UpsertResult:
        return UpsertResult()

    async def find(
        self,
        where: ServiceFilter = EVERY_SERVICE,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        return Page(items=[], next_cursor=None)


class FakeWakeups:
    """Notifications the test sends, instead of a LISTEN connection."""

    def __init__(self) -> None:
        self.notes: asyncio.Queue[Notification] = asyncio.Queue()
        self.channels: list[Sequence[str]] = []

    def __call__(self, channels: Sequence[str]) -> AsyncIterator[Notification]:
        self.channels.append(channels)
        return self._notes()

    async def _notes(self) -> AsyncIterator[Notification]:
        while True:
            yield await self.notes.get()

    def send(self, channel: str, payload: str = "") -> None:
        self.notes.put_nowait(Notification(channel, payload))


class Hang:
    """An executor that waits until released, counting who runs and how it ended."""

    def __init__(self) -> None:
        self.started: dict[uuid.UUID, asyncio.Event] = {}
        self.release = asyncio.Event()
        self.cancelled: list[uuid.UUID] = []
        self.was_cancelled = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    def started_event(self, job_id: uuid.UUID) -> asyncio.Event:
        return self.started.setdefault(job_id, asyncio.Event())

    async def __call__(self, context: JobContext) -> Outcome:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started_event(context.job_id).set()
        try:
            await self.release.wait()
            return {"attempt": context.job.attempt}
        except asyncio.CancelledError:
            self.cancelled.append(context.job_id)
            self.was_cancelled.set()
            raise
        finally:
            self.in_flight -= 1


async def started(executor: Hang, job_id: uuid.UUID) -> None:
    await asyncio.wait_for(executor.started_event(job_id).wait(), BOUND_S)


async def renewals(queue: FakeQueue, count: int) -> None:
    """Wait for ``count`` more lease renewals (heartbeats of any job)."""
    for _ in range(count):
        queue.renewed.clear()
        await asyncio.wait_for(queue.renewed.wait(), BOUND_S)


class FakeChangeLog:
    """The change feed as housekeeping sees it: what it was asked to prune."""

    def __init__(self) -> None:
        self.pruned: list[timedelta] = []

    async def prune(self, older_than: timedelta, *, batch: int = 5000) -> int:
        self.pruned.append(older_than)
        return 3


@asynccontextmanager
async def running(
    queue: JobQueue,
    executor: Executor,
    *,
    options: WorkerOptions = OPTIONS,
    wakeups: FakeWakeups | None = None,
    services: JobServices | None = None,
    changes: FakeChangeLog | None = None,
) -> AsyncIterator[tuple[Worker, asyncio.Task[None]]]:
    """A worker on the fake queue, running until the block ends (then stopped)."""
    worker = Worker(
        conninfo="unused: the wake-ups are injected",
        store=queue,
        services=services or FakeServices(),
        executor=executor,
        options=options,
        worker_id="test-worker",
        wakeups=wakeups or FakeWakeups(),
        changes=changes,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker, task
    finally:
        stop.set()
        await asyncio.wait_for(task, BOUND_S)


def counting(
    body: Callable[[JobContext, int], Awaitable[Outcome]],
) -> tuple[Executor, dict[uuid.UUID, int]]:
    """An executor running ``body(context, nth call for this job)``, and the call counts."""
    calls: dict[uuid.UUID, int] = {}

    async def run(context: JobContext) -> Outcome:
        calls[context.job_id] = calls.get(context.job_id, 0) + 1
        return await body(context, calls[context.job_id])

    return run, calls


async def test_each_job_runs_once_and_completes_with_its_result() -> None:
    queue = FakeQueue()
    ids = [queue.submit(f"n{i}") for i in range(5)]

    async def body(context: JobContext, call: int) -> Outcome:
        return {"attempt": context.job.attempt}

    executor, calls = counting(body)
    async with running(queue, executor):
        jobs = [await queue.ended(job_id) for job_id in ids]
    assert calls == {job_id: 1 for job_id in ids}
    for job in jobs:
        assert (job.status, job.attempts, job.outcomes) == ("completed", 1, ["completed"])
        assert job.result is not None
        assert job.result["attempt"] == 1
    assert sorted(queue.finished) == sorted(ids)


async def test_a_transient_failure_retries_with_the_attempt_counted() -> None:
    queue = FakeQueue()
    job_id = queue.submit(max_attempts=3)

    async def body(context: JobContext, call: int) -> Outcome:
        if call == 1:
            raise TransientFailure("lost the connection")
        return {"attempt": context.job.attempt}

    executor, calls = counting(body)
    async with running(queue, executor):
        job = await queue.ended(job_id)
    assert (job.status, job.attempts, calls[job_id]) == ("completed", 2, 2)
    assert job.outcomes == ["retry", "completed"]
    assert job.errors[0] == {"code": "TRANSIENT", "message": "lost the connection"}
    assert job.result is not None
    assert job.result["attempt"] == 2


async def test_a_job_out_of_attempts_fails_saying_so() -> None:
    queue = FakeQueue()
    job_id = queue.submit(max_attempts=2)

    async def body(context: JobContext, call: int) -> Outcome:
        raise ConnectionError("down again")

    executor, calls = counting(body)
    async with running(queue, executor):
        job = await queue.ended(job_id)
    assert (job.status, job.attempts, calls[job_id]) == ("failed", 2, 2)
    assert job.outcomes == ["retry", "failed"]
    final = job.errors[-1]
    assert final is not None
    assert final["code"] == "SCAN_FAILED"
    assert final["message"].startswith("gave up after 2 attempts")


async def test_a_permanent_failure_fails_at_once() -> None:
    queue = FakeQueue()
    job_id = queue.submit(max_attempts=5)

    async def body(context: JobContext, call: int) -> Outcome:
        raise ScanFailed("nothing to scan here")

    executor, calls = counting(body)
    async with running(queue, executor):
        job = await queue.ended(job_id)
    assert (job.status, job.attempts, calls[job_id], job.outcomes) == ("failed", 1, 1, ["failed"])
    assert job.errors == [{"code": "SCAN_FAILED", "message": "nothing to scan here"}]


async def test_a_cancel_notification_stops_the_running_job() -> None:
    queue, executor, wakeups = FakeQueue(), Hang(), FakeWakeups()
    job_id = queue.submit()
    async with running(queue, executor, wakeups=wakeups):
        await started(executor, job_id)
        wakeups.send("ronin_job_cancel", str(job_id))
        job = await queue.ended(job_id)
    assert executor.cancelled == [job_id]
    assert (job.status, job.outcomes) == ("failed", ["failed"])
    assert job.errors[0] is not None
    assert job.errors[0]["code"] == "CANCELLED"
    assert wakeups.channels == [("ronin_jobs", "ronin_job_cancel")]


async def test_a_cancel_reaches_the_job_through_its_heartbeat() -> None:
    queue, executor = FakeQueue(), Hang()
    job_id = queue.submit()
    async with running(queue, executor):
        await started(executor, job_id)
        queue.request_cancel(job_id)  # no notification: the next renewal says so
        job = await queue.ended(job_id)
    assert executor.cancelled == [job_id]
    assert job.errors[0] is not None
    assert (job.status, job.errors[0]["code"]) == ("failed", "CANCELLED")


async def test_a_lost_lease_stops_the_job_without_ending_it() -> None:
    queue, executor = FakeQueue(), Hang()
    job_id = queue.submit()
    async with running(queue, executor) as (worker, _):
        await started(executor, job_id)
        queue.steal(job_id)
        await asyncio.wait_for(executor.was_cancelled.wait(), BOUND_S)
    job = queue.jobs[job_id]
    assert (executor.cancelled, worker.running) == ([job_id], 0)
    assert queue.final_writes == []  # not even tried: the job is another worker's now
    assert (job.status, job.outcomes, queue.finished) == ("running", [], [])


async def test_a_lost_lease_seen_by_a_progress_write_ends_nothing() -> None:
    queue, stolen = FakeQueue(), asyncio.Event()
    job_id = queue.submit()

    async def body(context: JobContext, call: int) -> Outcome:
        queue.steal(context.job_id)
        try:
            await context.progress(50, "half way", force=True)
        finally:
            stolen.set()
        return {"unreachable": True}

    executor, calls = counting(body)
    async with running(queue, executor) as (worker, _):
        await asyncio.wait_for(stolen.wait(), BOUND_S)
    job = queue.jobs[job_id]
    assert (calls[job_id], job.outcomes, queue.final_writes, worker.running) == (1, [], [], 0)


async def test_shutdown_after_the_grace_hands_running_jobs_back_without_an_attempt() -> None:
    queue, executor = FakeQueue(), Hang()
    job_id = queue.submit()
    options = replace(OPTIONS, shutdown_grace=timedelta(seconds=0.05))
    async with running(queue, executor, options=options):
        await started(executor, job_id)
    job = queue.jobs[job_id]
    assert executor.cancelled == [job_id]
    assert (job.status, job.attempts, job.outcomes) == ("pending", 0, ["released"])
    assert job.errors == [None]


async def test_hurry_skips_the_grace() -> None:
    queue, executor = FakeQueue(), Hang()
    job_id = queue.submit()
    async with running(queue, executor) as (worker, task):  # a 30 s grace
        await started(executor, job_id)
        worker.hurry()
    assert task.done()
    job = queue.jobs[job_id]
    assert (job.status, job.attempts, job.outcomes) == ("pending", 0, ["released"])


async def test_a_job_that_ends_within_the_grace_completes() -> None:
    queue, executor = FakeQueue(), Hang()
    job_id = queue.submit()
    stop = asyncio.Event()
    worker = Worker(
        conninfo="unused",
        store=queue,
        services=FakeServices(),
        executor=executor,
        options=OPTIONS,
        wakeups=FakeWakeups(),
    )
    task = asyncio.create_task(worker.run(stop))
    await started(executor, job_id)
    stop.set()
    claims = len(queue.claim_batches)
    await renewals(queue, 2)  # the worker is in its grace: the job goes on, nothing is claimed
    assert not task.done()
    executor.release.set()
    await asyncio.wait_for(task, BOUND_S)
    job = queue.jobs[job_id]
    assert (job.status, job.outcomes, executor.cancelled) == ("completed", ["completed"], [])
    assert len(queue.claim_batches) == claims


async def test_never_more_jobs_at_once_than_the_concurrency() -> None:
    queue, executor = FakeQueue(), Hang()
    ids = [queue.submit(f"n{i}") for i in range(5)]
    async with running(queue, executor):  # concurrency 2
        await started(executor, ids[0])
        await started(executor, ids[1])
        # Heartbeats of both jobs, tens of poll intervals, while both slots are busy: no
        # third job is claimed meanwhile.
        await renewals(queue, 6)
        assert executor.in_flight == 2
        assert sum(job.status == "pending" for job in queue.jobs.values()) == 3
        executor.release.set()
        jobs = [await queue.ended(job_id) for job_id in ids]
    assert executor.most_in_flight == 2
    assert all(job.outcomes == ["completed"] for job in jobs)
    assert max(queue.claim_batches) <= 2
    assert 0 not in queue.claim_batches  # a full worker does not ask the queue at all


async def test_a_notification_wakes_an_idle_worker_before_its_poll() -> None:
    queue, wakeups = FakeQueue(), FakeWakeups()
    options = replace(OPTIONS, poll_interval=timedelta(hours=1))

    async def body(context: JobContext, call: int) -> Outcome:
        return None

    executor, calls = counting(body)
    async with running(queue, executor, options=options, wakeups=wakeups):
        await asyncio.wait_for(queue.claimed.wait(), BOUND_S)  # idle: found nothing
        job_id = queue.submit()
        wakeups.send("ronin_jobs")
        job = await queue.ended(job_id)
    assert (job.status, calls) == ("completed", {job_id: 1})


async def test_housekeeping_enqueues_due_schedules_and_prunes() -> None:
    queue = FakeQueue()
    queue.due = [params("scheduled")]
    options = replace(
        OPTIONS,
        max_attempts=4,
        job_retention=timedelta(days=7),
        changes_retention=timedelta(hours=5),
    )
    changes = FakeChangeLog()

    async def body(context: JobContext, call: int) -> Outcome:
        return {"target": context.params.target}

    executor, calls = counting(body)
    before = datetime.now(UTC)
    async with running(queue, executor, options=options, changes=changes):
        await asyncio.wait_for(queue.claimed.wait(), BOUND_S)  # after the schedule check
        (job_id,) = queue.jobs
        job = await queue.ended(job_id)
    assert queue.schedule_checks[0] == 4
    assert (job.status, job.max_attempts, calls) == ("completed", 4, {job_id: 1})
    assert job.result is not None
    assert job.result["target"] == "did:kos:test:scheduled"
    assert len(queue.prune_cutoffs) == 1
    assert queue.prune_cutoffs[0] >= before - timedelta(days=7)
    assert queue.prune_cutoffs[0] <= datetime.now(UTC) - timedelta(days=7)
    assert changes.pruned == [timedelta(hours=5)]  # the change feed's retention, once

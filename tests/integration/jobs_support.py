"""Helpers for job tests: in-process workers and waiting for jobs to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from ronin.discovery.crawl import DiscoveryOptions, run_discovery
from ronin.discovery.crawl_state import CrawlReport
from ronin.jobs.context import JobContext
from ronin.jobs.executor import Executor
from ronin.jobs.submit import submit_job
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.services import ServiceMap
from tests.support import executors

FAST = WorkerOptions(
    concurrency=4,
    lease=timedelta(seconds=3),
    poll_interval=timedelta(seconds=0.2),
    shutdown_grace=timedelta(seconds=5),
    retry_base=timedelta(seconds=0.05),
)
WAIT_S = 60


@asynccontextmanager
async def running_worker(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    *,
    options: WorkerOptions = FAST,
    executor: Executor = executors.run,
) -> AsyncIterator[Worker]:
    """A worker running in this event loop until the block ends (then shut down)."""
    worker = Worker(
        conninfo=db_url,
        store=JobStore(pool),
        services=ServiceMap(pool, freshness_window=timedelta(hours=1)),
        executor=executor,
        options=options,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="test worker")
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=WAIT_S)


async def wait_for(
    store: JobStore, job_id: uuid.UUID, condition: Callable[[Job], bool] = lambda j: j.finished
) -> Job:
    """Poll a job until ``condition`` holds (bounded by WAIT_S)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            job = await store.get(job_id)
            if condition(job):
                return job
            await asyncio.sleep(0.05)


async def run_discovery_job(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    params: dict[str, Any],
    options: DiscoveryOptions,
) -> Job:
    """Submit a discovery job and run it to its end in an in-process worker with ``options``."""

    async def run(context: JobContext) -> CrawlReport:
        return await run_discovery(context, options)

    job, _ = await submit_job(store, params, max_attempts=1)
    async with running_worker(db_url, pool, executor=run):
        return await wait_for(store, job.job_id)

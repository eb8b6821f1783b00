"""The worker loop in-process: jobs end exactly once, retries, cancel, shutdown, progress."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ronin.jobs.submit import submit_job
from ronin.store.jobs import JobStore
from tests.integration.jobs_support import FAST, running_worker, wait_for
from tests.support.executors import target


async def submit(store: JobStore, behaviour: str, max_attempts: int = 3) -> Any:
    job, _ = await submit_job(store, target(behaviour), max_attempts=max_attempts)
    return job.job_id


async def test_jobs_run_once_and_complete_with_their_results(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        ids = [await submit(store, "noop") for _ in range(20)]
        jobs = [await wait_for(store, job_id) for job_id in ids]
    for job in jobs:
        assert job.status == "completed"
        assert job.completed_at is not None
        assert job.progress == 100
        assert job.result is not None
        assert job.result["services"] == {"new": 1, "refreshed": 0}
        assert job.result["attempt"] == 1
        assert [a.outcome for a in await store.attempts(job.job_id)] == ["completed"]
        assert await store.service_ids(job.job_id) == [(f"did:kos:service:{job.job_id}", "new")]


async def test_transient_failures_retry_with_backoff_and_keep_each_error(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job = await wait_for(store, await submit(store, "transient:2", max_attempts=5))
    assert job.status == "completed"
    attempts = await store.attempts(job.job_id)
    assert [a.outcome for a in attempts] == ["retry", "retry", "completed"]
    assert attempts[0].error is not None
    assert "lost the connection" in attempts[0].error["message"]


async def test_a_job_out_of_attempts_fails_saying_so(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job = await wait_for(store, await submit(store, "transient:9", max_attempts=2))
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "SCAN_FAILED"
    assert job.error["message"].startswith("gave up after 2 attempts")
    assert len(await store.attempts(job.job_id)) == 2


async def test_a_permanent_failure_fails_at_once(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job = await wait_for(store, await submit(store, "permanent", max_attempts=5))
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error == {"code": "SCAN_FAILED", "message": "nothing to scan here (on purpose)"}


async def test_a_job_over_its_time_limit_fails_with_timeout(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    options = dataclasses.replace(FAST, job_timeout=timedelta(seconds=0.3))
    async with running_worker(db_url, pool, options=options):
        job = await wait_for(store, await submit(store, "hang"))
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "TIMEOUT"


async def test_a_running_job_stops_when_cancelled(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job_id = await submit(store, "hang")
        await wait_for(store, job_id, lambda j: j.status == "running")
        assert await store.cancel(job_id) == "running"
        job = await wait_for(store, job_id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "CANCELLED"
    assert [a.outcome for a in await store.attempts(job_id)] == ["failed"]


async def test_cancel_reaches_the_worker_through_the_heartbeat_without_notify(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job_id = await submit(store, "hang")
        await wait_for(store, job_id, lambda j: j.status == "running")
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE discovery_job_state SET cancel_requested = true")
        job = await wait_for(store, job_id)
    assert job.error is not None
    assert job.error["code"] == "CANCELLED"


async def test_shutdown_releases_running_jobs_without_spending_an_attempt(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    options = dataclasses.replace(FAST, shutdown_grace=timedelta(seconds=0.2))
    async with running_worker(db_url, pool, options=options):
        job_id = await submit(store, "hang")
        await wait_for(store, job_id, lambda j: j.status == "running")
    job = await store.get(job_id)
    assert (job.status, job.attempts, job.worker_id, job.completed_at) == ("pending", 0, None, None)
    assert [a.outcome for a in await store.attempts(job_id)] == ["released"]


async def test_shutdown_lets_a_short_job_finish_within_the_grace(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        job_id = await submit(store, "steps:3")
        await wait_for(store, job_id, lambda j: j.status == "running")
    assert (await store.get(job_id)).status == "completed"


async def test_progress_is_stored_and_published(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    events: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN ronin_job_events")
        async with running_worker(db_url, pool):
            job_id = await submit(store, "steps:4")
            async with asyncio.timeout(60):
                async for note in listener.notifies():
                    events.append(json.loads(note.payload))
                    if events[-1].get("status") == "completed":
                        break
    progress = [e["progress"] for e in events if e["status"] == "running"]
    assert progress == [25, 50, 75, 100]
    assert {e["job_id"] for e in events} == {str(job_id)}
    assert events[-1] == {"job_id": str(job_id), "status": "completed"}


async def test_an_idle_worker_wakes_on_notify_not_on_its_poll(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    # With an hour between polls, only the notification can start the job in time.
    options = dataclasses.replace(FAST, poll_interval=timedelta(hours=1))
    async with running_worker(db_url, pool, options=options):
        await asyncio.sleep(0.5)  # the worker has polled once and is idle
        job = await wait_for(store, await submit(store, "noop"))
    assert job.status == "completed"


async def test_a_job_inserted_by_hand_is_queued_and_found_by_polling(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    async with running_worker(db_url, pool):
        await asyncio.sleep(0.5)
        with psycopg.connect(db_url, autocommit=True) as conn:
            # As the founding document allows: no state row, no notification.
            row = conn.execute(
                "INSERT INTO discovery_jobs (status, params) VALUES ('pending', %s) "
                "RETURNING job_id",
                (psycopg.types.json.Jsonb(target("noop")),),
            ).fetchone()
        assert row is not None
        job = await wait_for(store, row[0])
    assert job.status == "completed"


async def test_a_job_with_invalid_stored_params_fails_permanently(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    job_id = await submit(store, "noop")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE discovery_jobs SET params = '{\"target\": 1}'")
    async with running_worker(db_url, pool):
        job = await wait_for(store, job_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error is not None
    assert job.error["code"] == "INVALID_TARGET"


async def test_three_workers_create_one_job_per_schedule_period(
    store: JobStore, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    from ronin.jobs.submit import add_schedule

    await add_schedule(store, "every-hour", target("noop"), 3600)
    async with (
        running_worker(db_url, pool),
        running_worker(db_url, pool),
        running_worker(db_url, pool),
    ):
        async with asyncio.timeout(60):
            while True:
                jobs = (await store.list_jobs(status="completed")).items
                if jobs:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # time for a wrong second job to appear
    assert len((await store.list_jobs()).items) == 1
    assert jobs[0].schedule_id is not None

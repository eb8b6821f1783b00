"""Real worker processes on a real server: kill -9, many workers, a database restart, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.jobs.submit import submit_job
from ronin.store.jobs import JobStore
from tests.conftest import server_directory
from tests.support.executors import target

ROOT = Path(__file__).parents[2]
WAIT_S = 120


class Workers:
    """Worker processes started by a test, all stopped when it ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tmp_path = tmp_path
        self.logs: list[Any] = []

    def start_discovery(self, db_url: str, **env: str) -> subprocess.Popen[bytes]:
        """A worker running the real discovery executor."""
        return self.start(db_url, executor=None, **env)

    def start(
        self,
        db_url: str,
        *,
        concurrency: int = 4,
        executor: str | None = "tests.support.executors:run",
        **env: str,
    ) -> subprocess.Popen[bytes]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("RONIN_", "PG"))}
        environment |= {
            "RONIN_DATABASE_URL": db_url,
            "RONIN_JOB_LEASE_S": "2",
            "RONIN_POLL_INTERVAL_S": "0.2",
        } | env
        log = (self.tmp_path / f"worker-{len(self.processes)}.log").open("wb")
        self.logs.append(log)
        command = [sys.executable, "-m", "ronin", "worker", "--concurrency", str(concurrency)]
        command += ["--executor", executor] if executor else []
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for log in self.logs:
            log.close()

    def log(self, index: int) -> str:
        return (self.tmp_path / f"worker-{index}.log").read_text()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def scalar(db_url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def wait_until(condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


async def submit_many(db_url: str, behaviour: str, count: int) -> list[uuid.UUID]:
    async with AsyncConnectionPool(db_url, min_size=4, max_size=4, open=False) as pool:
        store = JobStore(pool)
        semaphore = asyncio.Semaphore(8)

        async def one() -> uuid.UUID:
            async with semaphore:
                job, _ = await submit_job(store, target(behaviour), max_attempts=5)
                return job.job_id

        return list(await asyncio.gather(*(one() for _ in range(count))))


def unfinished(db_url: str) -> int:
    return int(scalar(db_url, "SELECT count(*) FROM discovery_jobs WHERE completed_at IS NULL"))


def test_a_job_killed_mid_run_is_reclaimed_resumed_and_ends_once(
    db_url: str, workers: Workers
) -> None:
    [job_id] = asyncio.run(submit_many(db_url, "steps:10", 1))
    first = workers.start(db_url)
    wait_until(
        lambda: (
            scalar(db_url, "SELECT progress FROM discovery_job_state WHERE job_id = %s", job_id)
            >= 30
        )
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    workers.start(db_url)
    wait_until(lambda: unfinished(db_url) == 0)
    assert scalar(db_url, "SELECT status FROM discovery_jobs WHERE job_id = %s", job_id) == (
        "completed"
    )
    result = scalar(db_url, "SELECT result FROM discovery_job_state WHERE job_id = %s", job_id)
    assert result["resumed_from"] >= 3  # the second attempt skipped the finished steps
    outcomes = scalar(
        db_url,
        "SELECT array_agg(outcome ORDER BY started_at) FROM discovery_job_attempts "
        "WHERE job_id = %s",
        job_id,
    )
    assert outcomes == ["lost", "completed"]
    assert scalar(db_url, "SELECT count(*) FROM discovered_services") == 1
    assert scalar(db_url, "SELECT count(*) FROM discovery_job_services") == 1


@pytest.mark.slow
def test_four_workers_end_a_thousand_jobs_exactly_once(db_url: str, workers: Workers) -> None:
    ids = asyncio.run(submit_many(db_url, "noop", 1000))
    for _ in range(4):
        workers.start(db_url, concurrency=8)
    wait_until(lambda: unfinished(db_url) == 0)
    workers.stop_all()
    assert all(p.returncode == 0 for p in workers.processes)

    assert scalar(db_url, "SELECT count(*) FROM discovery_jobs WHERE status = 'completed'") == len(
        ids
    )
    # One attempt per job: no job ran twice, none was lost.
    assert scalar(db_url, "SELECT count(*) FROM discovery_job_attempts") == len(ids)
    assert scalar(
        db_url, "SELECT count(*) FROM discovery_job_attempts WHERE outcome = 'completed'"
    ) == len(ids)
    assert scalar(db_url, "SELECT count(*) FROM discovered_services") == len(ids)
    assert scalar(db_url, "SELECT count(*) FROM discovery_job_services") == len(ids)
    assert scalar(db_url, "SELECT count(DISTINCT worker_id) FROM discovery_job_attempts") > 1


def test_sigterm_hands_running_jobs_back_without_spending_an_attempt(
    db_url: str, workers: Workers
) -> None:
    [job_id] = asyncio.run(submit_many(db_url, "hang", 1))
    worker = workers.start(db_url, RONIN_SHUTDOWN_GRACE_S="0.5")
    wait_until(
        lambda: (
            scalar(db_url, "SELECT status FROM discovery_jobs WHERE job_id = %s", job_id)
            == "running"
        )
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert scalar(db_url, "SELECT status FROM discovery_jobs WHERE job_id = %s", job_id) == (
        "pending"
    )
    assert scalar(db_url, "SELECT attempts FROM discovery_job_state WHERE job_id = %s", job_id) == 0
    assert (
        scalar(db_url, "SELECT outcome FROM discovery_job_attempts WHERE job_id = %s", job_id)
        == "released"
    )


@pytest.mark.slow
def test_workers_ride_out_a_database_restart(workers: Workers) -> None:
    """A server of this test's own, stopped and started again while workers run jobs."""
    from ronin.store.embedded import _import_library

    library = _import_library()
    server = library.get_server(
        server_directory("ronin-test-restart-") / "pgdata", cleanup_mode="stop"
    )
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE restart")
    db_url = server.get_uri(database="restart")
    from ronin.store.migrate import migrate

    async def prepare() -> list[uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await migrate(conn)
        return await submit_many(db_url, "steps:2", 60)

    ids = asyncio.run(prepare())
    for _ in range(2):
        workers.start(db_url, concurrency=4)
    wait_until(lambda: len(ids) - unfinished(db_url) >= 8)

    library.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    time.sleep(3)  # longer than a lease: every running job's lease expires while down
    server.ensure_postgres_running()

    wait_until(lambda: unfinished(db_url) == 0)
    assert scalar(db_url, "SELECT count(*) FROM discovery_jobs WHERE status = 'completed'") == len(
        ids
    )
    assert all(p.poll() is None for p in workers.processes), "a worker died with the database"
    # Each job ended once: one completed attempt, whatever was lost on the way.
    assert scalar(
        db_url, "SELECT count(*) FROM discovery_job_attempts WHERE outcome = 'completed'"
    ) == len(ids)
    assert scalar(db_url, "SELECT count(*) FROM discovered_services") == len(ids)

"""One composition root: every entry point gets the same stores, policy and job settings."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.api.state import NodeState
from ronin.cli.backend import LocalBackend
from ronin.discovery.policy import ScopePolicy
from ronin.errors import ForbiddenTarget
from ronin.node import Node, open_node
from ronin.store.database import Database
from ronin.store.jobs import JobStore
from tests.integration.api_support import api_client, job_params, settings_for
from tests.integration.jobs_support import wait_for
from tests.support.executors import target

MAX_ATTEMPTS = 2
WINDOW = timedelta(minutes=7)


def opened(db_url: str, pool: AsyncConnectionPool[Any], **overrides: Any) -> Node:
    """A node on the test's pool, with ``overrides`` in its settings."""
    return Node.on(settings_for(db_url, **overrides), Database(pool=pool, conninfo=db_url))


async def test_a_node_wires_its_stores_and_policy_from_its_settings(
    db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    node = opened(db_url, pool, freshness_window=WINDOW)
    assert node.services.freshness_window == WINDOW
    assert node.policy == ScopePolicy.from_settings(node.settings)
    state = NodeState.of(node)
    assert (state.jobs, state.services, state.policy) == (node.jobs, node.services, node.policy)
    assert (state.settings, state.database) == (node.settings, node.database)


async def test_the_configured_attempts_reach_every_submission(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    node = opened(db_url, pool, job_max_attempts=MAX_ATTEMPTS)
    job, new = await node.submit(job_params(), idempotency_key="once")
    assert new
    assert job.max_attempts == MAX_ATTEMPTS
    again, new = await node.submit(job_params(), idempotency_key="once")
    assert not new
    assert again.job_id == job.job_id
    local = await LocalBackend(node).submit(job_params())
    assert local.max_attempts == MAX_ATTEMPTS
    async with api_client(db_url, pool, job_max_attempts=MAX_ATTEMPTS) as client:
        answer = await client.post("/v1/jobs", json=job_params())
    assert answer.status_code == 202, answer.text
    assert (await store.get(answer.json()["job_id"])).max_attempts == MAX_ATTEMPTS


async def test_the_node_scope_refuses_jobs_and_schedules_outside_it(
    db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    node = opened(db_url, pool)  # allow: 127.0.0.0/8
    with pytest.raises(ForbiddenTarget):
        await node.submit(job_params("10.0.0.0/24"))
    with pytest.raises(ForbiddenTarget):
        await node.add_schedule("outside", job_params("10.0.0.0/24"), 60)
    schedule = await node.add_schedule("inside", job_params(), 60)
    assert [s.name for s in await node.jobs.schedules()] == [schedule.name]


@pytest.mark.parametrize("own_pool", [False, True], ids=["node pool", "own pool"])
async def test_a_node_worker_runs_the_named_executor_with_the_node_settings(
    db_url: str, pool: AsyncConnectionPool[Any], own_pool: bool
) -> None:
    node = opened(db_url, pool, job_max_attempts=MAX_ATTEMPTS)
    job, _ = await node.submit(target("noop"))
    async with open_node(node.settings, for_worker=True) as apart:
        worker = node.worker(
            concurrency=3,
            executor="tests.support.executors:run",
            database=apart.database if own_pool else None,
        )
        assert (worker.options.concurrency, worker.options.max_attempts) == (3, MAX_ATTEMPTS)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            done = await wait_for(node.jobs, job.job_id)
        finally:
            stop.set()
            await running
    assert done.status == "completed", done.error
    assert await node.services.get(f"did:kos:service:{job.job_id}") is not None

"""The queue's statements: submit, claim, leases, cancel, schedules and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from ronin.errors import AlreadyExists, InvalidTarget, JobFinished, NotFound
from ronin.jobs.submit import add_schedule, submit_job
from ronin.store.jobs import JobStore
from tests.support.executors import target
from tests.support.plans import explain

LEASE = timedelta(seconds=30)


def count(db_url: str, sql: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


async def submit(store: JobStore, behaviour: str = "noop", **kwargs: Any) -> Any:
    job, _ = await submit_job(store, target(behaviour), max_attempts=3, **kwargs)
    return job


async def test_a_valid_job_is_stored_pending_with_its_params_verbatim(store: JobStore) -> None:
    params = {
        "target": {"type": "network_cidr", "value": "192.168.1.0/24"},
        "protocols": ["mdns", "http-api"],
        "depth": 1,
        "ports": [30437],
    }
    job, new = await submit_job(store, params, max_attempts=3)
    assert new
    assert (job.status, job.params, job.attempts, job.completed_at) == ("pending", params, 0, None)
    assert job.job_id.version == 4


async def test_an_invalid_job_is_refused_and_nothing_is_written(
    store: JobStore, db_url: str
) -> None:
    with pytest.raises(InvalidTarget) as raised:
        await submit_job(
            store,
            {"target": {"type": "network_cidr", "value": "10.0.0.0/40"}, "protocols": ["http-api"]},
            max_attempts=3,
        )
    assert raised.value.field == "target.value"
    assert count(db_url, "SELECT count(*) FROM discovery_jobs") == 0


async def test_an_idempotency_key_makes_a_retried_submission_return_the_first_job(
    store: JobStore, db_url: str
) -> None:
    results = await asyncio.gather(
        *(
            submit_job(store, target("noop"), max_attempts=3, idempotency_key="k-1")
            for _ in range(8)
        )
    )
    assert len({job.job_id for job, _ in results}) == 1
    assert sorted(new for _, new in results) == [False] * 7 + [True]
    assert count(db_url, "SELECT count(*) FROM discovery_jobs") == 1


async def test_jobs_inserted_together_without_keys_come_back_in_order_each_with_its_state(
    store: JobStore,
) -> None:
    params = [target(f"noop-{i}") for i in range(40)]
    written = await store.insert_many(params, max_attempts=3)
    assert [job.params for job, _ in written] == params
    assert all(new for _, new in written)
    ids = [job.job_id for job, _ in written]
    assert len(set(ids)) == 40
    assert {job_id.version for job_id in ids} == {4}
    for job, _ in written:
        stored = await store.get(job.job_id)
        assert stored == job  # the answer is the row as stored, state and all
        assert (stored.status, stored.max_attempts, stored.attempts) == ("pending", 3, 0)


async def test_a_job_inserted_without_a_key_is_answered_byte_for_byte_as_it_reads_back(
    store: JobStore,
) -> None:
    """The statement returns ids and a time only; the rest of each answer is made from the
    params and the columns' defaults, and must be what reading the row back gives, down to
    jsonb's key order (shorter keys first, then by UTF-8 bytes) and its numbers."""
    odd = {
        "target": {"value": "noop-odd", "type": "domain"},
        "protocols": ["http-api", "did"],
        "é": {"zz": [1.0, 1e-07, 10**15, {"b": 1, "a": None}], "y": "ünï", "aa": True},
        "aa": 2.5,
        "ab": 0,
        "b": "",
    }
    written = await store.insert_many([odd, target("noop-plain")], max_attempts=4)
    for job, _ in written:
        stored = await store.get(job.job_id)
        assert orjson.dumps(job) == orjson.dumps(stored)
    assert list(written[0][0].params) == ["b", "aa", "ab", "é", "target", "protocols"]


async def test_claims_are_batched_and_never_overlap(store: JobStore) -> None:
    submitted = {(await submit(store)).job_id for _ in range(10)}
    first, second, third = await asyncio.gather(
        store.claim("w1", batch=4, lease=LEASE),
        store.claim("w2", batch=4, lease=LEASE),
        store.claim("w3", batch=4, lease=LEASE),
    )
    claimed = [job.job_id for job in first + second + third]
    assert len(claimed) == len(set(claimed)) == 10
    assert set(claimed) == submitted
    assert all(job.attempt == 1 for job in first + second + third)
    assert await store.claim("w4", batch=4, lease=LEASE) == []
    assert (await store.get(claimed[0])).status == "running"


async def test_the_claim_uses_the_partial_index_as_finished_jobs_pile_up(
    store: JobStore, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO discovery_jobs (status, params, completed_at) "
            "SELECT 'completed', '{}', now() FROM generate_series(1, 20000)"
        )
        conn.execute("ANALYZE")
    await submit(store)
    nodes = explain(
        db_url, "claim_jobs", {"worker_id": "w", "batch": 4, "lease": LEASE, "job_id": None}
    )
    assert "idx_discovery_jobs_claim" in {n.get("Index Name") for n in nodes}
    scans = [
        n["Node Type"]
        for n in nodes
        if n.get("Relation Name") == "discovery_jobs" and n["Node Type"].endswith("Scan")
    ]
    assert scans
    assert set(scans) <= {"Index Scan", "Index Only Scan"}


async def test_a_dead_workers_job_is_reclaimed_and_its_late_writes_change_nothing(
    store: JobStore, db_url: str
) -> None:
    job_id = (await submit(store)).job_id
    [dead] = await store.claim("dead", batch=1, lease=LEASE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE discovery_job_state SET lease_expires_at = now() - interval '1s'")
    # An expired lease is a lost lease, even before anyone re-claims the job.
    assert await store.renew_lease(dead, LEASE) is None
    assert not await store.record_progress(dead, 50, "late", None)

    [rescued] = await store.claim("alive", batch=1, lease=LEASE)
    assert rescued.job_id == job_id
    assert rescued.attempt == 2
    assert rescued.lease_token != dead.lease_token
    assert not await store.finish(dead, "completed", result={"late": True})
    assert not await store.requeue(dead, outcome="retry", delay=timedelta(0), error=None)
    await store.link_services(dead, ["did:kos:service:late"], ["new"])
    assert await store.service_ids(job_id) == []

    job = await store.get(job_id)
    assert (job.status, job.worker_id, job.result, job.completed_at) == (
        "running",
        "alive",
        None,
        None,
    )
    assert await store.finish(rescued, "completed", result={"ok": True})
    attempts = await store.attempts(job_id)
    assert [(a.worker_id, a.outcome) for a in attempts] == [
        ("dead", "lost"),
        ("alive", "completed"),
    ]
    assert attempts[0].error == {
        "code": "LEASE_EXPIRED",
        "message": "the worker stopped renewing its lease",
    }


async def test_finish_sets_completed_at_exactly_once(store: JobStore) -> None:
    job_id = (await submit(store)).job_id
    [claimed] = await store.claim("w", batch=1, lease=LEASE)
    running = await store.get(job_id)
    assert running.completed_at is None
    assert await store.finish(claimed, "failed", error={"code": "SCAN_FAILED", "message": "x"})
    assert not await store.finish(claimed, "completed", result={})
    job = await store.get(job_id)
    assert job.status == "failed"
    assert job.completed_at is not None
    assert job.error == {"code": "SCAN_FAILED", "message": "x"}


async def test_cancelling_a_pending_job_ends_it_at_once(store: JobStore) -> None:
    job_id = (await submit(store)).job_id
    assert await store.cancel(job_id) == "pending"
    job = await store.get(job_id)
    assert (job.status, job.error) == (
        "failed",
        {"code": "CANCELLED", "message": "cancelled by an operator"},
    )
    assert job.completed_at is not None
    assert await store.claim("w", batch=1, lease=LEASE) == []
    with pytest.raises(JobFinished):
        await store.cancel(job_id)


async def test_cancelling_an_unknown_job_says_so(store: JobStore) -> None:
    import uuid

    with pytest.raises(NotFound):
        await store.cancel(uuid.uuid4())


async def test_a_schedule_creates_one_job_per_period_however_many_workers_ask(
    store: JobStore, db_url: str
) -> None:
    schedule_id = (await add_schedule(store, "nightly", target("noop"), 3600)).schedule_id
    created = await asyncio.gather(*(store.enqueue_due_schedules(max_attempts=3) for _ in range(3)))
    assert sum(len(c) for c in created) == 1
    again = await asyncio.gather(*(store.enqueue_due_schedules(max_attempts=3) for _ in range(3)))
    assert sum(len(c) for c in again) == 0

    # The next period comes: exactly one more.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE discovery_schedules SET next_run_at = now() - interval '1s'")
    later = await asyncio.gather(*(store.enqueue_due_schedules(max_attempts=3) for _ in range(3)))
    assert sum(len(c) for c in later) == 1
    jobs = (await store.list_jobs()).items
    assert [j.schedule_id for j in jobs] == [schedule_id, schedule_id]
    [schedule] = await store.schedules()
    assert schedule.next_run_at > datetime.now(UTC) + timedelta(minutes=59)


async def test_missed_periods_are_skipped_not_replayed(store: JobStore, db_url: str) -> None:
    await add_schedule(store, "hourly", target("noop"), 3600)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE discovery_schedules SET next_run_at = now() - interval '10 hours'")
    assert len(await store.enqueue_due_schedules(max_attempts=3)) == 1
    assert await store.enqueue_due_schedules(max_attempts=3) == []


async def test_retention_prunes_old_finished_jobs_with_their_links(
    store: JobStore, db_url: str
) -> None:
    old, recent, pending = (await submit(store)).job_id, (await submit(store)).job_id, None
    for _ in range(2):
        [claimed] = await store.claim("w", batch=1, lease=LEASE)
        await store.link_services(claimed, ["did:kos:service:x"], ["new"])
        await store.finish(claimed, "completed", result={})
    pending = (await submit(store)).job_id
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE discovery_jobs SET completed_at = now() - interval '40 days' WHERE job_id = %s",
            (old,),
        )
    assert await store.prune(datetime.now(UTC) - timedelta(days=30)) == 1
    with pytest.raises(NotFound):
        await store.get(old)
    assert (await store.get(recent)).status == "completed"
    assert (await store.get(pending)).status == "pending"
    assert count(db_url, "SELECT count(*) FROM discovery_job_services") == 1
    assert count(db_url, f"SELECT count(*) FROM discovery_job_attempts WHERE job_id = '{old}'") == 0


async def test_job_pages_walk_every_job_newest_first(store: JobStore) -> None:
    ids = [(await submit(store)).job_id for _ in range(7)]
    seen, cursor = [], None
    while True:
        page = await store.list_jobs(limit=3, cursor=cursor)
        seen += [job.job_id for job in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    assert (await store.list_jobs(status="running")).items == []


async def test_a_schedule_is_removed_by_name_or_id(store: JobStore) -> None:
    first = await add_schedule(store, "by-name", target("noop"), 3600)
    second = await add_schedule(store, "by-id", target("noop"), 3600)
    await store.remove_schedule("by-name")
    await store.remove_schedule(str(second.schedule_id))
    assert await store.schedules() == []
    with pytest.raises(NotFound):
        await store.remove_schedule(str(first.schedule_id))


async def test_a_schedule_name_is_taken_once(store: JobStore) -> None:
    await add_schedule(store, "nightly", target("noop"), 3600)
    with pytest.raises(AlreadyExists):
        await add_schedule(store, "nightly", target("noop"), 7200)
    assert [s.interval_s for s in await store.schedules()] == [3600]

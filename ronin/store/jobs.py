"""The job queue on ``discovery_jobs``: submit, claim, lease, finish, cancel, schedule, prune.

Semantics (what to claim, how long a lease lasts, when to retry) are decided in
``ronin.jobs``; this module only states them in SQL, in one statement where it matters.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from ronin.errors import AlreadyExists, InvalidCursor, JobCancelled, JobFinished, NotFound
from ronin.store.cursor import decode_cursor, encode_cursor
from ronin.store.database import pooled_connection
from ronin.store.job_models import (
    Attempt,
    ClaimedJob,
    FoundPage,
    FoundService,
    Job,
    JobPage,
    JobStatus,
    Schedule,
)
from ronin.store.models import Service
from ronin.store.queries import query
from ronin.store.services import Pool

MAX_JOB_PAGE = 500


@dataclass(frozen=True, slots=True)
class Finish:
    """The final write of one job: its status, result and error."""

    job: ClaimedJob
    status: JobStatus
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


CANCELLED_ERROR = JobCancelled().to_payload()


class JobStore:
    """SQL for the queue; every worker write is guarded by its lease token."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A pool connection; driver errors leave it as ``DatabaseError``."""
        return pooled_connection(self._pool)

    async def insert(
        self,
        params: dict[str, Any],
        *,
        max_attempts: int,
        idempotency_key: str | None = None,
        schedule_id: uuid.UUID | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> tuple[Job, bool]:
        """Insert a pending job; return it and whether it is new.

        With an idempotency key, a second submission returns the first one's job. Without
        one, the job is written by one statement: one round trip.
        """
        values = {
            "params": Jsonb(params),
            "max_attempts": max_attempts,
            "idempotency_key": idempotency_key,
            "schedule_id": schedule_id,
        }
        if conn is not None:
            return await self._insert(conn, values)
        async with self.connection() as own:
            if idempotency_key is None:
                return await self._insert(own, values)
            async with own.transaction():
                return await self._insert(own, values)

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], values: dict[str, Any]
    ) -> tuple[Job, bool]:
        cur = conn.cursor(row_factory=class_row(Job))
        if values["idempotency_key"] is not None:
            key = {"idempotency_key": values["idempotency_key"]}
            await conn.execute(query("lock_idempotency_key"), key)
            await cur.execute(query("job_by_idempotency_key"), key)
            earlier = await cur.fetchone()
            if earlier is not None:
                return earlier, False
        await cur.execute(query("insert_job"), values)
        job = await cur.fetchone()
        assert job is not None
        return job, True

    async def insert_many(
        self,
        params: Sequence[dict[str, Any]],
        *,
        max_attempts: int,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[tuple[Job, bool]]:
        """Insert pending jobs in one statement; each job and whether it is new, in order.

        An item whose idempotency key an earlier job has gets that job; items sharing a new
        key get the first one's. With keys, the statement runs in a transaction after the
        keys are locked, so concurrent submissions of a key make one job between them.
        """
        if not params:
            return []
        keys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(params)
        if len(keys) != len(params):
            raise ValueError("one idempotency key (or None) per job")
        if all(key is None for key in keys):
            return [(job, True) for job in await self._insert_new(params, max_attempts)]
        values = {
            "params": orjson.dumps(params).decode(),
            "idempotency_keys": keys,
            "max_attempts": max_attempts,
        }
        async with self.connection() as conn, conn.transaction():
            await conn.execute(query("lock_idempotency_keys"), values)
            return await self._insert_many(conn, values)

    async def _insert_new(self, params: Sequence[dict[str, Any]], max_attempts: int) -> list[Job]:
        """New jobs without keys, by the statement made for them; in the order of ``params``.
        Only their ids and time come back: the rest is what was given and the defaults."""
        values = {"params": orjson.dumps(params).decode(), "max_attempts": max_attempts}
        async with self.connection() as conn:
            cur = await conn.execute(query("insert_new_jobs"), values, prepare=True)
            rows = await cur.fetchall()
        return [
            Job.pending(job_id, given, created_at, max_attempts)
            for (job_id, created_at), given in zip(rows, params, strict=True)
        ]

    async def _insert_many(
        self, conn: psycopg.AsyncConnection[Any], values: dict[str, Any]
    ) -> list[tuple[Job, bool]]:
        cur = await conn.execute(query("insert_jobs"), values, prepare=True)
        return [(Job(*row[1:]), not row[0]) for row in await cur.fetchall()]

    async def claim(
        self,
        worker_id: str,
        *,
        batch: int,
        lease: timedelta,
        job_id: uuid.UUID | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``batch`` jobs (or only ``job_id``) for ``worker_id``, in one statement."""
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                query("claim_jobs"),
                {"worker_id": worker_id, "batch": batch, "lease": lease, "job_id": job_id},
            )
            rows = await cur.fetchall()
        return [
            ClaimedJob(
                job_id=row["job_id"],
                params=row["params"],
                lease_token=row["lease_token"],
                attempt=row["attempts"],
                max_attempts=row["max_attempts"],
                checkpoint=row["checkpoint"],
                cancel_requested=row["cancel_requested"],
                lease_expires_at=row["lease_expires_at"],
            )
            for row in rows
        ]

    async def renew_lease(self, job: ClaimedJob, lease: timedelta) -> tuple[bool, datetime] | None:
        """Extend the lease; (cancel requested, new expiry), or None if the lease is lost."""
        row = await self._guarded_one("renew_lease", job, {"lease": lease})
        return (bool(row[0]), row[1]) if row else None

    async def record_progress(
        self, job: ClaimedJob, progress: int, message: str, checkpoint: dict[str, Any] | None
    ) -> bool:
        """Store and publish progress (and a checkpoint); False if the lease is lost."""
        params = {
            "progress": progress,
            "message": message,
            "checkpoint": Jsonb(checkpoint) if checkpoint is not None else None,
        }
        return await self._guarded_one("record_progress", job, params) is not None

    async def link_services(
        self, job: ClaimedJob, service_ids: Sequence[str], outcomes: Sequence[str]
    ) -> None:
        """Remember which services this job found (new) or refreshed."""
        if service_ids:
            await self._guarded_one(
                "link_services",
                job,
                {"service_ids": list(service_ids), "outcomes": list(outcomes)},
                fetch=False,
            )

    async def finish_many(self, items: Sequence[Finish]) -> set[uuid.UUID]:
        """End jobs ``completed`` or ``failed`` in one statement; the ids actually ended (a
        job whose lease was lost first is not among them)."""
        if not items:
            return set()
        params = {
            "job_ids": [item.job.job_id for item in items],
            "lease_tokens": [item.job.lease_token for item in items],
            "statuses": [item.status for item in items],
            "results": [Jsonb(item.result or {}) for item in items],
            "errors": [Jsonb(item.error) if item.error is not None else None for item in items],
        }
        async with self.connection() as conn:
            cur = await conn.execute(query("finish_jobs"), params)
            return {row[0] for row in await cur.fetchall()}

    async def finish(
        self,
        job: ClaimedJob,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """End one job; False if its lease was lost first."""
        return job.job_id in await self.finish_many([Finish(job, status, result, error)])

    async def requeue(
        self, job: ClaimedJob, *, outcome: str, delay: timedelta, error: dict[str, Any] | None
    ) -> bool:
        """Back to pending: ``retry`` after ``delay``, or ``released`` with the attempt given
        back; False if the lease was lost first."""
        params = {"outcome": outcome, "delay": delay, "error": Jsonb(error) if error else None}
        return await self._guarded_one("requeue_job", job, params) is not None

    async def cancel(self, job_id: uuid.UUID) -> JobStatus:
        """Cancel a job: a pending one ends now, a running one is asked to stop.

        Returns the status it had. ``JobFinished`` if it already ended.
        """
        async with self.connection() as conn, conn.transaction():
            row = await (await conn.execute(query("lock_job"), {"job_id": job_id})).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id}", field="job_id")
            status: JobStatus = row[0]
            if status == "pending":
                await conn.execute(
                    query("cancel_pending_job"), {"job_id": job_id, "error": Jsonb(CANCELLED_ERROR)}
                )
            elif status == "running":
                await conn.execute(query("request_cancel"), {"job_id": job_id})
            else:
                raise JobFinished(f"job {job_id} has already ended ({status})", field="job_id")
        return status

    async def get(self, job_id: uuid.UUID) -> Job:
        """One job; ``NotFound`` if there is none."""
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Job))
            await cur.execute(query("get_job"), {"job_id": job_id})
            job = await cur.fetchone()
        if job is None:
            raise NotFound(f"no job {job_id}", field="job_id")
        return job

    async def job_ids_between(
        self, low: uuid.UUID, high: uuid.UUID, *, limit: int
    ) -> list[uuid.UUID]:
        """Up to ``limit`` job ids from ``low`` to ``high``: how a prefix of an id is found."""
        async with self.connection() as conn:
            cur = await conn.execute(
                query("job_ids_in_range"), {"low": low, "high": high, "limit": limit}
            )
            return [row[0] for row in await cur.fetchall()]

    async def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """A page of jobs, newest first."""
        before_created_at, before_job_id = _decode_job_cursor(cursor) if cursor else (None, None)
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Job))
            await cur.execute(
                query("list_jobs"),
                {
                    "status": status,
                    "before_created_at": before_created_at,
                    "before_job_id": before_job_id,
                    "limit": min(max(limit, 1), MAX_JOB_PAGE),
                },
            )
            items = await cur.fetchall()
        last = items[-1] if items and len(items) == limit else None
        return JobPage(items, _encode_job_cursor(last) if last else None)

    async def attempts(self, job_id: uuid.UUID) -> list[Attempt]:
        """Every attempt of a job, oldest first."""
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Attempt))
            await cur.execute(query("job_attempts"), {"job_id": job_id})
            return await cur.fetchall()

    async def service_ids(self, job_id: uuid.UUID) -> list[tuple[str, str]]:
        """(service_id, new|refreshed) of every service the job found."""
        async with self.connection() as conn:
            cur = await conn.execute(query("job_service_ids"), {"job_id": job_id})
            return [(row[0], row[1]) for row in await cur.fetchall()]

    async def found_services(
        self, job_id: uuid.UUID, *, limit: int = 100, cursor: str | None = None
    ) -> FoundPage:
        """A page of what a job found, in ``service_id`` order."""
        after = decode_cursor(cursor) if cursor is not None else None
        limit = min(max(limit, 1), MAX_JOB_PAGE)
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                query("job_services_page"), {"job_id": job_id, "after": after, "limit": limit}
            )
            rows = await cur.fetchall()
        items = [FoundService(row.pop("outcome"), Service(**row)) for row in rows]
        last = items[-1].service.service_id if len(items) == limit else None
        return FoundPage(items, encode_cursor(last) if last else None)

    async def count_pending(self, *, up_to: int) -> int:
        """How many jobs are pending, counting no further than ``up_to``."""
        async with self.connection() as conn:
            cur = await conn.execute(query("count_pending_jobs"), {"limit": up_to})
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status."""
        async with self.connection() as conn:
            cur = await conn.execute(query("count_jobs_by_status"))
            return {str(status): int(count) for status, count in await cur.fetchall()}

    async def prune(self, cutoff: datetime) -> int:
        """Delete jobs that finished before ``cutoff`` with everything attached to them."""
        async with self.connection() as conn:
            cur = await conn.execute(query("prune_jobs"), {"cutoff": cutoff})
            return cur.rowcount

    async def add_schedule(self, name: str, params: dict[str, Any], interval_s: int) -> Schedule:
        """Register a recurring discovery, first due now."""
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Schedule))
            await cur.execute(
                query("insert_schedule"),
                {"name": name, "params": Jsonb(params), "interval_s": interval_s},
            )
            schedule = await cur.fetchone()
        if schedule is None:
            raise AlreadyExists(f"a schedule named {name!r} exists already", field="name")
        return schedule

    async def schedules(self) -> list[Schedule]:
        """Every recurring discovery, by name."""
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Schedule))
            await cur.execute(query("list_schedules"))
            return await cur.fetchall()

    async def remove_schedule(self, ref: str) -> None:
        """Remove a schedule by name or id; ``NotFound`` if none matches."""
        async with self.connection() as conn:
            cur = await conn.execute(query("delete_schedule"), {"ref": ref})
            if cur.rowcount == 0:
                raise NotFound(f"no schedule {ref!r}", field="schedule")

    async def enqueue_due_schedules(self, *, max_attempts: int) -> list[uuid.UUID]:
        """Create the job of every schedule whose period has come, exactly once.

        The schedule rows are locked (SKIP LOCKED) and advanced in the transaction that
        creates their jobs; the idempotency key names the period, so even a schedule edited
        by hand cannot get two jobs for one period.
        """
        created: list[uuid.UUID] = []
        async with self.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("due_schedules"))
            for due in await cur.fetchall():
                period = due["next_run_at"].isoformat()
                job, new = await self.insert(
                    due["params"],
                    max_attempts=max_attempts,
                    idempotency_key=f"schedule:{due['schedule_id']}:{period}",
                    schedule_id=due["schedule_id"],
                    conn=conn,
                )
                await conn.execute(query("advance_schedule"), {"schedule_id": due["schedule_id"]})
                if new:
                    created.append(job.job_id)
        return created

    async def _guarded_one(
        self, name: str, job: ClaimedJob, params: dict[str, Any], *, fetch: bool = True
    ) -> Any:
        """Run a lease-guarded statement; its first row (None when the lease is lost)."""
        values = {"job_id": job.job_id, "lease_token": job.lease_token} | params
        async with self.connection() as conn:
            cur = await conn.execute(query(name), values)
            return await cur.fetchone() if fetch else cur.rowcount


def _encode_job_cursor(job: Job) -> str:
    raw = f"j1:{job.created_at.isoformat()}|{job.job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_job_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, job_id = text.removeprefix("j1:").partition("|")
        if not text.startswith("j1:"):
            raise ValueError(text)
        return datetime.fromisoformat(created_at), uuid.UUID(job_id)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidCursor("cursor is not one Ronin issued", field="cursor") from None

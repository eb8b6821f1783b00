"""Follow a job live: its progress as it happens, then its end.

Events come from ``LISTEN ronin_job_events``; the job row is read again whenever an event
names it and at least every ``poll_s`` anyway, so a lost notification only delays an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from ronin.store.job_models import Job
from ronin.store.jobs import JobStore

DEFAULT_POLL_S = 1.0


async def follow_job(
    conninfo: str, store: JobStore, job_id: uuid.UUID, *, poll_s: float = DEFAULT_POLL_S
) -> AsyncIterator[Job]:
    """Yield the job each time it changes, ending with it finished."""
    changed = asyncio.Event()
    listener = asyncio.create_task(_listen(conninfo, job_id, changed), name=f"follow {job_id}")
    last: tuple[Any, ...] | None = None
    try:
        while True:
            changed.clear()
            job = await store.get(job_id)
            state = (job.status, job.progress, job.progress_message, job.attempts)
            if state != last:
                last = state
                yield job
            if job.finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=poll_s)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _listen(conninfo: str, job_id: uuid.UUID, changed: asyncio.Event) -> None:
    """Set ``changed`` on each event about ``job_id``; polling covers any gap."""
    wanted = str(job_id)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute("LISTEN ronin_job_events")
                async for note in conn.notifies():
                    with contextlib.suppress(ValueError):
                        if json.loads(note.payload).get("job_id") == wanted:
                            changed.set()
        except psycopg.Error:
            await asyncio.sleep(1)

"""Follow jobs live: their progress as it happens, then their end.

One ``LISTEN ronin_job_events`` connection (``JobEvents``) serves every follower in a
process, however many jobs they watch. A job row is read again whenever an event names it and
at least every ``poll_s`` anyway, so a lost notification only delays an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ronin.jobs.waits import wait_any
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.listen import Listener

logger = logging.getLogger(__name__)

DEFAULT_POLL_S = 1.0


class JobEvents:
    """Wakes the followers of a job when the database says it changed."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JobEvents:
        """Nothing yet: the listener starts with the first follower, so a node whose jobs
        nobody follows holds no LISTEN connection."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set each time ``job_id`` changes, for the duration of the block."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="job events listener")
        changed = asyncio.Event()
        key = str(job_id)
        self._waiters.setdefault(key, set()).add(changed)
        try:
            yield changed
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(changed)
                if not waiters:
                    del self._waiters[key]

    def _wake(self, key: str | None) -> None:
        waiters = self._waiters.values() if key is None else [self._waiters.get(key, set())]
        for group in waiters:
            for changed in group:
                changed.set()

    async def _listen(self) -> None:
        async for note in Listener(self._conninfo, ["ronin_job_events"]):
            # On a reconnection anything may have changed while we were away.
            self._wake(None if note.reconnected else _job_key(note.payload))


def _job_key(payload: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        key = json.loads(payload).get("job_id")
        return key if isinstance(key, str) else None
    return None


async def follow_job(
    store: JobStore,
    job_id: uuid.UUID,
    events: JobEvents,
    *,
    poll_s: float = DEFAULT_POLL_S,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Job]:
    """Yield the job each time it changes, ending with it finished (or once ``stop`` is set)."""
    last: tuple[Any, ...] | None = None
    stop = stop or asyncio.Event()
    with events.watch(job_id) as changed:
        while not stop.is_set():
            changed.clear()
            job = await store.get(job_id)
            state = (job.status, job.progress, job.progress_message, job.attempts)
            if state != last:
                last = state
                yield job
            if job.finished:
                return
            await wait_any(changed, stop, timeout_s=poll_s)

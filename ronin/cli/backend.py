"""Where the operator commands get their answers: the database, or a remote node's API.

``RONIN_URL`` (and ``RONIN_TOKEN``) make ``ronin jobs``, ``ronin services`` and
``ronin schedules`` talk to a Ronin over HTTP (``ronin.cli.remote``, imported only then);
otherwise they use the database directly. Both backends return the store's own dataclasses,
so every command renders one way; ``watch`` yields each change record as the JSON the API
sends (PROTOCOL.md section 9), from either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ronin.config import Settings
from ronin.errors import CursorExpired, DatabaseError, InvalidValue, NotFound, StreamTooSlow
from ronin.node import Node, open_node
from ronin.store.database import one_line
from ronin.store.job_models import Attempt, Job, JobPage, JobStatus, Schedule
from ronin.store.models import Page, ServiceFilter

if TYPE_CHECKING:
    from ronin.store.changes import ChangeFilter

logger = logging.getLogger(__name__)
MIN_PREFIX = 4
PREFIX_CANDIDATES = 10
_UUID_ZEROS = "00000000-0000-0000-0000-000000000000"
_UUID_TEXT = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
#: How long ``watch`` waits before reconnecting: doubled after each failure, up to the most.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0


class Backend(Protocol):
    """What the operator commands ask of a node."""

    async def submit(self, params: dict[str, Any]) -> Job: ...
    async def list_jobs(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage: ...
    async def job(self, job_id: uuid.UUID) -> Job: ...
    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[uuid.UUID]: ...
    async def attempts(self, job_id: uuid.UUID) -> list[Attempt]: ...
    async def cancel(self, job_id: uuid.UUID) -> Job: ...
    def follow(self, job_id: uuid.UUID) -> AsyncIterator[tuple[str, int, str]]: ...
    async def services(self, where: ServiceFilter, limit: int, cursor: str | None) -> Page: ...
    async def schedules(self) -> list[Schedule]: ...
    async def add_schedule(self, name: str, params: Any, interval_s: int) -> Schedule: ...
    async def remove_schedule(self, ref: str) -> None: ...
    async def change_cursor(self) -> str: ...
    def watch(self, since: str, where: ChangeFilter) -> AsyncIterator[bytes]: ...


def expired(since: str, current: str) -> CursorExpired:
    """``since`` is older than the changes kept: say so, and where to start again."""
    return CursorExpired(
        f"the changes after cursor {since} are no longer kept (RONIN_CHANGES_RETENTION_S); "
        f"the current cursor is {current}: re-read the map (ronin services), then resume with "
        f"ronin watch --since {current}",
        cursor=current,
    )


def reconnect_delays() -> Iterator[float]:
    """The waits between reconnections: RECONNECT_FIRST_S, doubled, at most RECONNECT_MAX_S."""
    delay = RECONNECT_FIRST_S
    while True:
        yield delay
        delay = min(delay * 2, RECONNECT_MAX_S)


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[Backend]:
    """The remote node at ``RONIN_URL`` if set, else the database."""
    if settings.remote_url:
        from ronin.cli.remote import RemoteBackend  # httpx and pydantic: only for a remote node

        async with RemoteBackend(settings.remote_url, settings.remote_token) as remote:
            yield remote
    else:
        async with open_node(settings) as node:
            yield LocalBackend(node)


def job_id_prefix(text: str) -> uuid.UUID | str:
    """A whole job id, or the start of one (at least MIN_PREFIX hex digits, as tables show it)."""
    typed = text.strip().lower()
    with contextlib.suppress(ValueError):
        return uuid.UUID(typed)
    digits = len(typed.replace("-", ""))
    if digits < MIN_PREFIX or not _UUID_TEXT.fullmatch(typed + _UUID_ZEROS[len(typed) :]):
        raise InvalidValue(
            f"{text!r} is not a job id, nor the start of one (at least {MIN_PREFIX} hex digits)",
            field="job_id",
        )
    return typed


async def resolve_job_id(backend: Backend, text: str) -> uuid.UUID:
    """The one job whose id is, or starts with, ``text``; refused if none or several."""
    typed = job_id_prefix(text)
    if isinstance(typed, uuid.UUID):
        return typed
    found = await backend.job_ids_with_prefix(typed, PREFIX_CANDIDATES + 1)
    if not found:
        raise NotFound(f"no job id starts with {typed}", field="job_id")
    if len(found) > 1:
        shown = ", ".join(str(job_id) for job_id in found[:PREFIX_CANDIDATES])
        more = ", ..." if len(found) > PREFIX_CANDIDATES else ""
        raise InvalidValue(
            f"{typed} starts several job ids ({shown}{more}): give more of it", field="job_id"
        )
    return found[0]


def prefix_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The lowest and highest ids that start with ``prefix`` (a checked prefix)."""
    rest = _UUID_ZEROS[len(prefix) :]
    return uuid.UUID(prefix + rest), uuid.UUID(prefix + rest.replace("0", "f"))


class LocalBackend:
    """The database, directly."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._jobs = node.jobs

    async def submit(self, params: dict[str, Any]) -> Job:
        job, _ = await self._node.submit(params)
        return job

    async def list_jobs(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        return await self._jobs.list_jobs(status=status, limit=limit, cursor=cursor)

    async def job(self, job_id: uuid.UUID) -> Job:
        return await self._jobs.get(job_id)

    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[uuid.UUID]:
        low, high = prefix_range(prefix)
        return await self._jobs.job_ids_between(low, high, limit=limit)

    async def attempts(self, job_id: uuid.UUID) -> list[Attempt]:
        return await self._jobs.attempts(job_id)

    async def cancel(self, job_id: uuid.UUID) -> Job:
        await self._jobs.cancel(job_id)
        return await self._jobs.get(job_id)

    async def follow(self, job_id: uuid.UUID) -> AsyncIterator[tuple[str, int, str]]:
        from ronin.jobs.follow import JobEvents, follow_job  # LISTEN: only to follow a job

        async with JobEvents(self._node.database.conninfo) as events:
            async for job in follow_job(self._jobs, job_id, events):
                yield job.status, job.progress, job.progress_message

    async def services(self, where: ServiceFilter, limit: int, cursor: str | None) -> Page:
        return await self._node.services.find(where, limit=limit, cursor=cursor)

    async def schedules(self) -> list[Schedule]:
        return await self._jobs.schedules()

    async def add_schedule(self, name: str, params: Any, interval_s: int) -> Schedule:
        return await self._node.add_schedule(name, params, interval_s)

    async def remove_schedule(self, ref: str) -> None:
        await self._jobs.remove_schedule(ref)

    async def change_cursor(self) -> str:
        return await self._node.changes.current()

    async def watch(self, since: str, where: ChangeFilter) -> AsyncIterator[bytes]:
        """The changes after ``since`` as they commit. A lost database is waited for, and a
        stream too slow for the hub's ring starts again: either resumes after the last change
        it yielded (or the last heartbeat's cursor)."""
        from ronin.store.change_hub import Heartbeat  # LISTEN: only to watch

        last = since
        delays = reconnect_delays()
        lost = False
        try:
            # Before the hub starts: one that ends at once can miss its cancellation (a
            # query's, under psycopg 3.3 on Python 3.11) and never exit.
            await self._node.changes.check(since)
        except CursorExpired as exc:
            raise expired(since, exc.cursor) from None
        async with self._node.change_hub() as hub:
            while True:
                try:
                    async for item in hub.follow(last, where):
                        if lost:
                            logger.warning("the database is back: resuming after cursor %s", last)
                            lost, delays = False, reconnect_delays()
                        if isinstance(item, Heartbeat):
                            last = item.cursor
                            continue
                        for change in item:
                            yield change.json_bytes()
                            last = change.cursor
                except CursorExpired as exc:
                    raise expired(last, exc.cursor) from None
                except StreamTooSlow:
                    continue
                except (DatabaseError, psycopg.OperationalError) as exc:
                    if not lost:
                        logger.warning(
                            "lost the database (%s): reconnecting, to resume after cursor %s",
                            one_line(exc),
                            last,
                        )
                    lost = True
                    await asyncio.sleep(next(delays))

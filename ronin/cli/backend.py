"""Where the operator commands get their answers: the database, or a remote node's API.

``RONIN_URL`` (and ``RONIN_TOKEN``) make ``ronin jobs``, ``ronin services`` and
``ronin schedules`` talk to a Ronin over HTTP; otherwise they use the database directly. Both
backends return the store's own dataclasses, so every command renders one way.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from ronin.api.wire import ATTEMPTS, JOB, JOB_PAGE, SCHEDULE, SCHEDULES, SERVICE_PAGE
from ronin.config import Settings
from ronin.discovery.policy import ScopePolicy
from ronin.errors import InvalidValue, NotFound, RemoteError, RemoteUnreachable
from ronin.jobs.follow import JobEvents, follow_job
from ronin.jobs.submit import add_schedule, submit_job
from ronin.store.database import Database, one_line, open_database
from ronin.store.job_models import Attempt, Job, JobPage, JobStatus, Schedule
from ronin.store.jobs import MAX_JOB_PAGE, JobStore
from ronin.store.models import Page, ServiceFilter
from ronin.store.services import ServiceMap

REMOTE_TIMEOUT_S = 30.0
MIN_PREFIX = 4
PREFIX_CANDIDATES = 10
#: A remote node is asked for its jobs a page at a time; this many are searched for a prefix.
REMOTE_PREFIX_SCAN = 5000
_UUID_ZEROS = "00000000-0000-0000-0000-000000000000"
_UUID_TEXT = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
T = TypeVar("T")


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


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[Backend]:
    """The remote node at ``RONIN_URL`` if set, else the database."""
    if settings.remote_url:
        async with RemoteBackend(settings.remote_url, settings.remote_token) as remote:
            yield remote
    else:
        async with await open_database(settings) as database:
            yield LocalBackend(database, settings)


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

    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._jobs = JobStore(database.pool)
        self._map = ServiceMap(database.pool, freshness_window=settings.freshness_window)
        self._policy = ScopePolicy.from_settings(settings)
        self._max_attempts = settings.job_max_attempts

    async def submit(self, params: dict[str, Any]) -> Job:
        job, _ = await submit_job(
            self._jobs, params, max_attempts=self._max_attempts, policy=self._policy
        )
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
        async with JobEvents(self._database.conninfo) as events:
            async for job in follow_job(self._jobs, job_id, events):
                yield job.status, job.progress, job.progress_message

    async def services(self, where: ServiceFilter, limit: int, cursor: str | None) -> Page:
        return await self._map.find(where, limit=limit, cursor=cursor)

    async def schedules(self) -> list[Schedule]:
        return await self._jobs.schedules()

    async def add_schedule(self, name: str, params: Any, interval_s: int) -> Schedule:
        return await add_schedule(self._jobs, name, params, interval_s, policy=self._policy)

    async def remove_schedule(self, ref: str) -> None:
        await self._jobs.remove_schedule(ref)


class RemoteBackend:
    """Another node's API, over HTTP."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._url = url
        self._client = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=REMOTE_TIMEOUT_S, follow_redirects=False
        )
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> RemoteBackend:
        await self._stack.enter_async_context(self._client)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> bytes:
        try:
            answer = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteUnreachable(self._url, one_line(exc)) from exc
        if answer.is_error:
            raise _remote_error(answer)
        return answer.content

    async def submit(self, params: dict[str, Any]) -> Job:
        return _read(JOB, await self._call("POST", "/v1/jobs", json=params))

    async def list_jobs(self, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        params = _params(status=status, limit=limit, cursor=cursor)
        return _read(JOB_PAGE, await self._call("GET", "/v1/jobs", params=params))

    async def job(self, job_id: uuid.UUID) -> Job:
        return _read(JOB, await self._call("GET", f"/v1/jobs/{job_id}"))

    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[uuid.UUID]:
        """The API finds jobs by whole id only: search the newest REMOTE_PREFIX_SCAN."""
        found: list[uuid.UUID] = []
        cursor: str | None = None
        for _ in range(REMOTE_PREFIX_SCAN // MAX_JOB_PAGE):
            page = await self.list_jobs(None, MAX_JOB_PAGE, cursor)
            found += [job.job_id for job in page.items if str(job.job_id).startswith(prefix)]
            cursor = page.next_cursor
            if len(found) >= limit or cursor is None:
                return found[:limit]
        if not found:
            raise NotFound(
                f"no job id starts with {prefix} among the newest {REMOTE_PREFIX_SCAN} jobs "
                f"of {self._url}: give the whole id",
                field="job_id",
            )
        return found

    async def attempts(self, job_id: uuid.UUID) -> list[Attempt]:
        return _read(ATTEMPTS, await self._call("GET", f"/v1/jobs/{job_id}/attempts"))

    async def cancel(self, job_id: uuid.UUID) -> Job:
        return _read(JOB, await self._call("DELETE", f"/v1/jobs/{job_id}"))

    async def follow(self, job_id: uuid.UUID) -> AsyncIterator[tuple[str, int, str]]:
        """The job's KLF events over Server-Sent Events, as (status, progress, message)."""
        path = f"/v1/jobs/{job_id}/events"
        try:
            async with self._client.stream("GET", path, timeout=None) as answer:
                if answer.is_error:
                    await answer.aread()
                    raise _remote_error(answer)
                async for message in _sse_data(answer):
                    payload = message.get("payload", {})
                    status = str(payload.get("status", ""))
                    yield status, int(payload.get("progress", 100)), str(payload.get("message", ""))
        except httpx.HTTPError as exc:
            raise RemoteUnreachable(self._url, one_line(exc), lost=True) from exc

    async def services(self, where: ServiceFilter, limit: int, cursor: str | None) -> Page:
        params = _params(
            capability=list(where.all_capabilities),
            any_capability=list(where.any_capabilities),
            node_class=where.node_class,
            node_id=where.node_id,
            seen_since=where.seen_since.isoformat() if where.seen_since else None,
            limit=limit,
            cursor=cursor,
        )
        return _read(SERVICE_PAGE, await self._call("GET", "/v1/services", params=params))

    async def schedules(self) -> list[Schedule]:
        return _read(SCHEDULES, await self._call("GET", "/v1/schedules"))

    async def add_schedule(self, name: str, params: Any, interval_s: int) -> Schedule:
        body = {"name": name, "params": params, "interval_s": interval_s}
        return _read(SCHEDULE, await self._call("POST", "/v1/schedules", json=body))

    async def remove_schedule(self, ref: str) -> None:
        await self._call("DELETE", f"/v1/schedules/{quote(ref, safe='')}")


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in (None, [])}


def _read(adapter: TypeAdapter[T], body: bytes) -> T:
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        message = f"the node's answer is not what Ronin expects: {exc}"
        raise RemoteError("BAD_ANSWER", message) from None


def _remote_error(answer: httpx.Response) -> RemoteError:
    try:
        error = orjson.loads(answer.content)["error"]
        return RemoteError(str(error["code"]), str(error["message"]), error.get("field"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return RemoteError(f"HTTP_{answer.status_code}", f"the node answered {answer.status_code}")


async def _sse_data(answer: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON ``data`` of each Server-Sent Event (one ``data:`` line per event here)."""
    async for line in answer.aiter_lines():
        if line.startswith("data:"):
            try:
                message = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict):
                yield message

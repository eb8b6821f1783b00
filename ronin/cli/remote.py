"""The remote backend: another node's API over HTTP, for ``RONIN_URL``.

Imported only when ``RONIN_URL`` is set, so a command on the database never loads httpx or
pydantic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from ronin.api.wire import ATTEMPTS, JOB, JOB_PAGE, SCHEDULE, SCHEDULES, SERVICE_PAGE
from ronin.errors import NotFound, RemoteError, RemoteUnreachable
from ronin.store.database import one_line
from ronin.store.job_models import Attempt, Job, JobPage, JobStatus, Schedule
from ronin.store.jobs import MAX_JOB_PAGE
from ronin.store.models import Page, ServiceFilter

REMOTE_TIMEOUT_S = 30.0
#: A remote node is asked for its jobs a page at a time; this many are searched for a prefix.
REMOTE_PREFIX_SCAN = 5000
T = TypeVar("T")


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
            state=list(where.states),
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

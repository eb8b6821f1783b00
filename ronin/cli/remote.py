"""The remote backend: another node's API over HTTP, for ``RONIN_URL``.

Imported only when ``RONIN_URL`` is set, so a command on the database never loads httpx or
pydantic.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from ronin.api.wire import ATTEMPTS, JOB, JOB_PAGE, SCHEDULE, SCHEDULES, SERVICE_PAGE
from ronin.cli.backend import expired, reconnect_delays
from ronin.cli.sse import SSEParser
from ronin.errors import CursorExpired, NotFound, RemoteError, RemoteUnreachable
from ronin.store.database import one_line
from ronin.store.job_models import Attempt, Job, JobPage, JobStatus, Schedule
from ronin.store.jobs import MAX_JOB_PAGE
from ronin.store.models import Page, ServiceFilter

if TYPE_CHECKING:
    from ronin.store.changes import ChangeFilter

logger = logging.getLogger(__name__)
REMOTE_TIMEOUT_S = 30.0
#: The change stream: a connection is given this long to open, and is taken for lost after
#: this long without a byte (a heartbeat comes at least every 15 s, PROTOCOL.md section 9),
#: so a half-open connection is noticed and reopened rather than waited on for ever.
STREAM_CONNECT_TIMEOUT_S = 10.0
STREAM_SILENCE_S = 60.0
#: Answers a reconnection may outlast (a node restarting, overloaded or between databases);
#: any other error answer ends ``watch``.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
HEARTBEAT = "heartbeat"
#: A remote node is asked for its jobs a page at a time; this many are searched for a prefix.
REMOTE_PREFIX_SCAN = 5000
T = TypeVar("T")


class _Retry(Exception):
    """An answer to reconnect after, as after a lost connection."""


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

    async def change_cursor(self) -> str:
        body = await self._call("GET", "/v1/changes")
        try:
            return str(orjson.loads(body)["cursor"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise _bad_answer("GET /v1/changes did not name a cursor") from None

    async def watch(self, since: str, where: ChangeFilter) -> AsyncIterator[bytes]:
        """The changes after ``since`` over Server-Sent Events, each the JSON the node sent.

        Any disconnect, network error or answer in RETRIED_STATUSES is followed by a
        reconnection with ``Last-Event-ID`` (the last change's cursor, or a heartbeat's), after
        an exponential backoff that starts over once an event comes; a node that cannot be
        reached at all the first time is an error, as for every command.
        """
        params = _params(
            since=since,
            capability=list(where.capabilities),
            node_class=where.node_class,
            node_id=where.node_id,
        )
        timeout = httpx.Timeout(
            REMOTE_TIMEOUT_S, connect=STREAM_CONNECT_TIMEOUT_S, read=STREAM_SILENCE_S
        )
        last = since
        connected = False
        lost = False
        delays = reconnect_delays()
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if connected:
                headers["Last-Event-ID"] = last
            try:
                async with self._client.stream(
                    "GET", "/v1/changes/stream", params=params, headers=headers, timeout=timeout
                ) as answer:
                    if answer.status_code != httpx.codes.OK:
                        await answer.aread()
                        if not connected or answer.status_code not in RETRIED_STATUSES:
                            raise _stream_error(answer, last)
                        raise _Retry(f"the node answered {answer.status_code}")
                    connected = True
                    if lost:
                        logger.warning(
                            "reconnected to %s: resuming after cursor %s", self._url, last
                        )
                        lost = False
                    parser = SSEParser(last)
                    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                    async for chunk in answer.aiter_bytes():
                        for event in parser.feed(decoder.decode(chunk)):
                            # The node is serving again: the next loss starts the waits over.
                            delays = reconnect_delays()
                            if event.event != HEARTBEAT:
                                yield event.data.encode()
                            last = event.id or last
                        last = parser.last_id or last
                reason = "the node closed the stream"
            except httpx.HTTPError as exc:
                if not connected:
                    raise RemoteUnreachable(self._url, one_line(exc)) from exc
                reason = one_line(exc)
            except _Retry as exc:
                reason = str(exc)
            if not lost:
                logger.warning(
                    "lost the change stream of %s (%s): reconnecting, to resume after cursor %s",
                    self._url,
                    reason,
                    last,
                )
            lost = True
            await asyncio.sleep(next(delays))

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
        raise _bad_answer(str(exc)) from None


def _bad_answer(why: str) -> RemoteError:
    return RemoteError("BAD_ANSWER", f"the node's answer is not what Ronin expects: {why}")


def _stream_error(answer: httpx.Response, since: str) -> RemoteError | CursorExpired:
    """The error answer to a change stream; CURSOR_EXPIRED with the current cursor it named."""
    error = _remote_error(answer)
    if error.code == CursorExpired.code:
        try:
            current = str(orjson.loads(answer.content)["error"]["cursor"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error
        return expired(since, current)
    return error


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

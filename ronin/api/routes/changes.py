"""``/v1/changes``: the change feed (PROTOCOL.md section 9), a page at a time or live over SSE.

Every stream of the process is served by the one ``ChangeHub`` (one LISTEN, one read of each
change, each change encoded once). A client that does not take what it is sent is cut off
after ``SEND_TIMEOUT_S`` (or when it falls out of the hub's ring); it reconnects with
``Last-Event-ID`` and resumes from the table.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Response
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from ronin import metrics
from ronin.api.auth import require_read
from ronin.api.routes.services import Capabilities
from ronin.api.state import NodeState, node
from ronin.api.wire import ChangePageBody, error_responses
from ronin.errors import StreamTooSlow
from ronin.store.change_hub import Heartbeat
from ronin.store.changes import CHANGE_TYPES, MAX_PAGE, Change, ChangeFilter, format_cursor

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/changes", tags=["changes"], dependencies=[Depends(require_read)])
Node = Annotated[NodeState, Depends(node)]
#: A client that has not taken a chunk of events in this long is disconnected.
SEND_TIMEOUT_S = 10.0
CHUNK_BYTES = 64 * 1024
Since = Annotated[
    str | None,
    Query(
        max_length=64,
        description="A cursor from an earlier answer: the changes after it. Without it: from "
        "now (an empty page and the current cursor).",
    ),
]
NodeClass = Annotated[str | None, Query(max_length=100)]
NodeId = Annotated[str | None, Query(max_length=255)]

#: One event of the stream, as the OpenAPI document describes it.
SSE_CHANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"type": "string", "enum": [*CHANGE_TYPES, "heartbeat"]},
        "id": {
            "type": "string",
            "description": "The change's cursor (a heartbeat's: the current one).",
        },
        "data": {
            "type": "string",
            "description": 'The change record as JSON; a heartbeat\'s is {"cursor": "..."}.',
        },
    },
}


@router.get("", response_model=ChangePageBody, responses=error_responses(400, 401, 410, 422, 503))
async def changes(
    state: Node,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    capability: Capabilities = [],  # noqa: B006 (FastAPI copies defaults)
    node_class: NodeClass = None,
    node_id: NodeId = None,
) -> Response:
    """The changes after ``since``, oldest first, a page at a time: read on from ``cursor``
    while ``more`` is true. A ``since`` older than the changes kept answers 410
    CURSOR_EXPIRED with the current ``cursor``: re-read the map, then resume from it."""
    where = ChangeFilter(tuple(capability), node_class, node_id)
    page = await state.node.changes.page(since, where, limit=limit)
    return Response(orjson.dumps(page.to_json()), media_type="application/json")


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events: each change with `id:` its cursor and `event:` "
            "its type, and a `heartbeat` event with the current cursor at least every 15 s.",
            "content": {"text/event-stream": {"schema": SSE_CHANGE_SCHEMA}},
        },
        **error_responses(400, 401, 410, 422, 503),
    },
)
async def change_stream(
    state: Node,
    since: Since = None,
    capability: Capabilities = [],  # noqa: B006
    node_class: NodeClass = None,
    node_id: NodeId = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Sent by a reconnecting EventSource: resume after it (wins over since).",
        ),
    ] = None,
) -> EventSourceResponse:
    """The changes after ``since`` (from now without it) as they commit, live."""
    where = ChangeFilter(tuple(capability), node_class, node_id)
    # A bad or expired cursor is an error answer, before the stream starts.
    start = format_cursor(await state.node.changes.check(last_event_id or since))
    return _ChangeStream(
        _events(state, start, where),
        ping=0,  # the stream's own heartbeat events keep it alive, with the cursor
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _ChangeStream(EventSourceResponse):
    """An SSE response whose client, cut off for taking nothing, is an INFO line, not an error
    with a traceback: a slow client is part of the design."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* SendTimeoutError:
            logger.info(
                "change stream to %s: nothing taken for %gs, disconnected (it resumes with "
                "Last-Event-ID)",
                _client(scope),
                SEND_TIMEOUT_S,
            )


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"


async def _events(state: NodeState, start: str, where: ChangeFilter) -> AsyncIterator[bytes]:
    """Each batch of changes as chunks of events, none much over CHUNK_BYTES."""
    metrics.CHANGE_STREAMS.inc()
    stream = state.hub.follow(start, where, heartbeat_s=state.settings.changes_heartbeat_s)
    try:
        async with contextlib.aclosing(stream):
            async for item in stream:
                if state.closing.is_set():
                    return
                if isinstance(item, Heartbeat):
                    yield _heartbeat(item)
                    continue
                metrics.CHANGE_STREAM_LAG.observe(max(0.0, time.time() - item[-1].at.timestamp()))
                for chunk in _chunks(item):
                    yield chunk
    except StreamTooSlow as exc:
        logger.info("change stream ended: %s", exc.message)
    finally:
        metrics.CHANGE_STREAMS.dec()


def _heartbeat(beat: Heartbeat) -> bytes:
    cursor = beat.cursor.encode()
    return b'id: %s\nevent: heartbeat\ndata: {"cursor":"%s"}\n\n' % (cursor, cursor)


def _chunks(changes: list[Change]) -> Iterator[bytes]:
    """The events of ``changes``, cut into chunks: what a stream holds while its client is slow
    is one chunk, not a whole batch."""
    events: list[bytes] = []
    size = 0
    for change in changes:
        event = b"id: %s\nevent: %s\ndata: %s\n\n" % (
            change.cursor.encode(),
            change.type.encode(),
            change.json_bytes(),
        )
        events.append(event)
        size += len(event)
        if size >= CHUNK_BYTES:
            yield b"".join(events)
            events, size = [], 0
    if events:
        yield b"".join(events)

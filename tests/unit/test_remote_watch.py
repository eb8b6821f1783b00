"""``watch`` through ``RONIN_URL``: a scripted node on loopback cuts, refuses and resumes the
change stream, and the client loses nothing, repeats nothing and stops on what cannot heal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from ronin.cli import backend
from ronin.cli import remote as remote_module
from ronin.cli.backend import reconnect_delays
from ronin.cli.remote import RemoteBackend
from ronin.errors import CursorExpired, RemoteError, RemoteUnreachable
from ronin.store.changes import ChangeFilter

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
TIMEOUT_S = 10


def record(seq: int) -> bytes:
    """A change record as a node would send it: keys in the node's order, unicode raw."""
    cursor = f"{seq:016d}"
    return orjson.dumps(
        {
            "cursor": cursor,
            "type": "service_changed",
            "at": "2026-12-02T14:00:00.123Z",
            "service_id": f"did:kos:service:{seq}",
            "node_id": "did:kos:node:1",
            "service": {"endpoint": "http://127.0.0.1:1/", "name": "caf\u00e9\u2028"},
        }
    )


def event(seq: int) -> bytes:
    return b"id: %016d\nevent: service_changed\ndata: %s\n\n" % (seq, record(seq))


def heartbeat(seq: int) -> bytes:
    return b'id: %016d\nevent: heartbeat\ndata: {"cursor": "%016d"}\n\n' % (seq, seq)


def whole(body: bytes) -> bytes:
    """A stream the node ends itself (connection: close, no length)."""
    return HEAD + b"connection: close\r\n\r\n" + body


def cut(body: bytes) -> bytes:
    """A chunked stream cut before its last chunk: the connection is lost mid-answer."""
    return HEAD + b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body)


def error(status: int, body: dict[str, object]) -> bytes:
    content = orjson.dumps(body)
    return (
        b"HTTP/1.1 %d Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (
            status,
            len(content),
            content,
        )
    )


@dataclass
class ScriptedNode:
    """Answers each request with the next reply of its script, then closes the connection."""

    replies: list[bytes]
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *lines = head.strip().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        self.requests.append({"target": request_line.split()[1], **headers})
        if self.replies:
            writer.write(self.replies.pop(0))
            await writer.drain()
        writer.transport.abort()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RemoteBackend]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            async with RemoteBackend(self.url, "a-token") as remote:
                yield remote
        finally:
            server.close()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "RECONNECT_FIRST_S", 0.0)


async def taken(stream: AsyncIterator[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for item in stream:
            found.append(item)
            if len(found) == count:
                break
    return found


def test_the_waits_double_up_to_five_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "RECONNECT_FIRST_S", 0.2)
    delays = reconnect_delays()
    assert [round(next(delays), 3) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5]


async def test_it_resumes_after_cuts_and_closes_without_losing_or_repeating() -> None:
    node = ScriptedNode(
        [
            cut(event(1) + event(2) + b"id: 0000000000000003\nevent: service_changed\ndata: {"),
            whole(heartbeat(3)),  # nothing matched up to 3: resume after it
            b"",  # a connection closed before any answer
            error(503, {"error": {"code": "DATABASE_UNREACHABLE", "message": "down"}}),
            whole(event(4)[:10] + event(4)[10:] + b": a comment\n\n"),
            cut(event(5)),
        ]
    )
    async with node.running() as remote:
        where = ChangeFilter(capabilities=("klf", "did"), node_class="griot")
        records = await taken(remote.watch(f"{0:016d}", where), 4)
    assert records == [record(1), record(2), record(4), record(5)]  # byte for byte
    first, *again = node.requests
    assert first["target"] == (
        "/v1/changes/stream?since=0000000000000000&capability=klf&capability=did&node_class=Griot"
    )
    assert first["authorization"] == "Bearer a-token"
    assert first["accept"] == "text/event-stream"
    assert "last-event-id" not in first
    # An event cut before its blank line is not counted: the stream resumes before it.
    assert [request.get("last-event-id") for request in again] == [
        "0000000000000002",
        "0000000000000003",
        "0000000000000003",
        "0000000000000003",
        "0000000000000004",
    ]
    assert all(request["target"] == first["target"] for request in again)


async def test_an_expired_cursor_names_the_current_one() -> None:
    body = {"error": {"code": "CURSOR_EXPIRED", "message": "too old", "cursor": f"{77:016d}"}}
    node = ScriptedNode([whole(event(1)), error(410, body)])
    async with node.running() as remote:
        stream = remote.watch(f"{0:016d}", ChangeFilter())
        assert await taken(stream, 1) == [record(1)]
        with pytest.raises(CursorExpired) as expired:
            await taken(stream, 1)
    assert expired.value.cursor == f"{77:016d}"
    assert f"after cursor {1:016d} are no longer kept" in expired.value.message
    assert f"--since {77:016d}" in expired.value.message


@pytest.mark.parametrize(
    ("status", "code"), [(401, "UNAUTHENTICATED"), (403, "INSUFFICIENT_SCOPE"), (400, "X")]
)
async def test_a_refusal_ends_the_stream_even_after_a_reconnection(status: int, code: str) -> None:
    refused = error(status, {"error": {"code": code, "message": "no"}})
    node = ScriptedNode([cut(event(1)), refused, refused])
    async with node.running() as remote:
        stream = remote.watch(f"{0:016d}", ChangeFilter())
        assert await taken(stream, 1) == [record(1)]
        with pytest.raises(RemoteError) as refusal:
            await taken(stream, 1)
    assert refusal.value.code == code
    assert len(node.requests) == 2


async def test_a_node_that_never_answers_is_unreachable_not_waited_for() -> None:
    node = ScriptedNode([b""])
    async with node.running() as remote:
        with pytest.raises(RemoteUnreachable):
            await taken(remote.watch(f"{0:016d}", ChangeFilter()), 1)
    assert len(node.requests) == 1


async def test_the_current_cursor_is_asked_for_once() -> None:
    page = orjson.dumps({"changes": [], "cursor": f"{9:016d}", "more": False})
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(page), page)
    node = ScriptedNode([answer])
    async with node.running() as remote:
        assert await remote.change_cursor() == f"{9:016d}"
    assert node.requests[0]["target"] == "/v1/changes"


async def test_the_waits_grow_while_the_node_is_away_and_start_over_once_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backend, "RECONNECT_FIRST_S", 0.2)
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(remote_module.asyncio, "sleep", no_sleep)
    down = error(503, {"error": {"code": "DATABASE_UNREACHABLE", "message": "down"}})
    node = ScriptedNode([cut(event(1)), b"", b"", down, cut(event(2)), b"", whole(event(3))])
    async with node.running() as remote:
        assert await taken(remote.watch(f"{0:016d}", ChangeFilter()), 3) == [
            record(1),
            record(2),
            record(3),
        ]
    assert waits == [0.2, 0.4, 0.8, 1.6, 0.2, 0.4]

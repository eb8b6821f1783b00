"""The change feed's stream (PROTOCOL.md section 9) as clients meet it: ``ronin serve`` as a
real process, changes written by hand into the map's tables (the triggers of migration 0005
log them), an SSE client that disconnects, reconnects, stalls."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ronin.store.changes import ChangeFeed
from tests.acceptance.serve_support import Process, served_node
from tests.support import sse

STREAM = "/v1/changes/stream"
ORIGIN = "0000000000000000"
HEARTBEAT = {"RONIN_CHANGES_HEARTBEAT_S": "0.5"}
READ = "read-token-0123456789"
TOKENS = f"read:{READ},write:write-token-0123456789"
STATES = ("alive", "suspect", "gone", "unverified")
#: Long enough for any one read of these tests on a loaded machine; the tests end on events.
TIMEOUT = httpx.Timeout(60.0)


def serve(tmp_path: Path, db_url: str, **env: str) -> Any:
    return served_node(tmp_path, db_url, "--workers", "0", **(HEARTBEAT | env))


def log(db_url: str, where: str = "true") -> list[tuple[str, str, str]]:
    """The change log, (cursor, type, service_id) in cursor order."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT seq, type, service_id FROM map_changes WHERE {where} ORDER BY seq"
        ).fetchall()
    return [(f"{seq:016d}", kind, service_id) for seq, kind, service_id in rows]


def head(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM map_changes").fetchone()
    assert row is not None
    return f"{row[0]:016d}"


def service_row(
    service_id: str,
    *,
    node_id: str = "did:kos:griot:test",
    node_class: str = "Griot",
    capabilities: tuple[str, ...] = ("packages",),
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "service_id": service_id,
        "node_id": node_id,
        "node_class": node_class,
        "endpoint": f"http://127.0.0.1:9/{service_id}",
        "capabilities": Jsonb(list(capabilities)),
        "metadata": Jsonb(metadata or {}),
    }


INSERT = (
    "INSERT INTO discovered_services (service_id, node_id, node_class, endpoint, capabilities,"
    " discovery_metadata, last_seen) VALUES (%(service_id)s, %(node_id)s, %(node_class)s,"
    " %(endpoint)s, %(capabilities)s, %(metadata)s, now())"
)


@dataclass
class MapWriter:
    """Writes every kind of change by hand, in transactions of the sizes asked for."""

    db_url: str
    rng: random.Random
    states: dict[str, str] = field(default_factory=dict)
    made: int = 0

    async def transaction(self, changes: int) -> None:
        async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
            async with conn.transaction():
                for _ in range(changes):
                    await self._one(conn)

    async def _one(self, conn: psycopg.AsyncConnection[Any]) -> None:
        kind = self.rng.choice(["add", "add", "change", "state", "state", "remove"])
        if kind == "add" or len(self.states) < 3:
            self.made += 1
            service_id = f"did:kos:service:w{self.made}"
            await conn.execute(INSERT, service_row(service_id))
            self.states[service_id] = "alive"
            return
        service_id = self.rng.choice(sorted(self.states))
        if kind == "change":
            # A sighting of a service that is not alive revives it: a second change.
            await conn.execute(
                "UPDATE discovered_services SET endpoint = %s WHERE service_id = %s",
                (f"http://127.0.0.1:9/{uuid.uuid4().hex}", service_id),
            )
            self.states[service_id] = "alive"
        elif kind == "state":
            state = self.rng.choice([s for s in STATES if s != self.states[service_id]])
            await conn.execute(
                "UPDATE service_liveness SET state = %s WHERE service_id = %s", (state, service_id)
            )
            self.states[service_id] = state
        else:
            await conn.execute("DELETE FROM discovered_services WHERE service_id = %s", (service_id,))
            del self.states[service_id]


async def cut_after(lines: AsyncIterator[str], count: int) -> AsyncIterator[str]:
    """The first ``count`` lines: a client that drops the connection there."""
    if count <= 0:
        return
    seen = 0
    async for line in lines:
        yield line
        seen += 1
        if seen >= count:
            return


@dataclass
class Serving:
    """The URL of the node now serving, None while it restarts."""

    url: str | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Follower:
    """A client of the stream that drops its connection at random points and resumes with
    ``Last-Event-ID``, as an EventSource does."""

    serving: Serving
    rng: random.Random
    received: list[sse.Event] = field(default_factory=list)
    last: str = ORIGIN
    connections: int = 0
    by_url: dict[str, int] = field(default_factory=dict)

    async def run(self, until: asyncio.Future[str]) -> None:
        while not (until.done() and self.last >= until.result()):
            url = self.serving.url
            if url is None:
                await self.serving.changed.wait()
                continue
            try:
                await self._connection(url, self.rng.randint(0, 160))
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await asyncio.sleep(0.05)  # the node is stopping, or gone

    async def _connection(self, url: str, lines: int) -> None:
        async with (
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
            sse.stream(client, STREAM, last_event_id=self.last) as answer,
        ):
            assert answer.status_code == 200, await answer.aread()
            self.connections += 1
            async for event in sse.parse(cut_after(answer.aiter_lines(), lines)):
                assert event.id is not None
                self.received.append(event)
                self.last = event.id
                self.by_url[url] = self.by_url.get(url, 0) + 1


@pytest.mark.slow
async def test_a_client_that_disconnects_and_a_node_that_restarts_lose_and_repeat_nothing(
    tmp_path: Path, db_url: str
) -> None:
    rng = random.Random(20261203)
    writer = MapWriter(db_url, random.Random(rng.random()))
    with ExitStack() as stack:
        first = await asyncio.to_thread(stack.enter_context, serve(tmp_path, db_url))
        serving = Serving(first.url)
        follower = Follower(serving, random.Random(rng.random()))
        final: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        following = asyncio.create_task(follower.run(final))

        async def write(transactions: int) -> None:
            for _ in range(transactions):
                await writer.transaction(rng.choice([1, 1, 2, 3, 5, 8, 13, 21, 40]))
                await asyncio.sleep(rng.choice([0, 0, 0.01, 0.05, 0.6]))  # 0.6: a heartbeat

        await write(30)
        # SIGTERM while the client follows, and while the writer goes on.
        writing = asyncio.create_task(write(25))
        serving.url = None
        assert await asyncio.to_thread(first.stop) == 0
        second = await asyncio.to_thread(stack.enter_context, serve(tmp_path, db_url))
        serving.url = second.url
        serving.changed.set()
        await writing
        await write(20)
        final.set_result(head(db_url))
        await asyncio.wait_for(following, 120)
        assert "Traceback" not in first.log() + second.log()

    expected = log(db_url)
    assert len(expected) > 500
    changes = [event for event in follower.received if event.event != "heartbeat"]
    got = [(event.id, event.event, event.json()["service_id"]) for event in changes]
    assert got == expected
    assert all(event.json()["cursor"] == event.id for event in changes)
    ids = [event.id or "" for event in follower.received]
    assert ids == sorted(ids), "a heartbeat's cursor went back"
    heartbeats = [event for event in follower.received if event.event == "heartbeat"]
    assert heartbeats and all(event.json() == {"cursor": event.id} for event in heartbeats)
    # The test did what it says: many cuts, events from both processes.
    print(f"{len(changes)} changes, {len(heartbeats)} heartbeats, {follower.connections} connections, {follower.by_url}")
    assert follower.connections > 20
    assert follower.by_url.get(first.url, 0) > 0 and follower.by_url.get(second.url, 0) > 0


# --- 100 clients, 20 of which never read ----------------------------------------------------

import os
READERS = int(os.environ.get("X_READERS", "80"))
STALLED = int(os.environ.get("X_STALLED", "20"))
BURST = 3000
BLOB = 4000
BATCH = 250


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def stalled_client(url: str, path: str) -> socket.socket:
    """A client that sends its request and never reads a byte of the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


async def read_ids(
    url: str, since: str, until: str, opened: asyncio.Event, halfway: asyncio.Event
) -> list[str]:
    """The cursors of the change events of one stream, read as fast as they come, until
    ``until``; the bytes are split by hand (80 of these parse 1 GB)."""
    ids: list[str] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
        sse.stream(client, STREAM, params={"since": since}) as answer,
    ):
        assert answer.status_code == 200
        opened.set()
        rest = b""
        async for chunk in answer.aiter_raw():
            *whole, rest = (rest + chunk).split(b"\n\n")
            for block in whole:
                first, second = block.split(b"\n", 2)[:2]
                assert first.startswith(b"id: ") and second.startswith(b"event: ")
                cursor = first[4:].decode()
                if second != b"event: heartbeat":
                    ids.append(cursor)
                if len(ids) == BURST // 2:
                    halfway.set()
                if cursor >= until:
                    return ids
    raise AssertionError("the stream ended")


def server_connections(pid: int, ports: set[int]) -> int:
    """How many of the connections from ``ports`` the server process still holds."""
    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port in ports
    )


async def burst(db_url: str, first: int, count: int, sample: Any) -> None:
    """``count`` services of ``BLOB`` bytes of metadata each, ``BATCH`` to a transaction."""
    blob = "x" * BLOB
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for start in range(first, first + count, BATCH):
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    INSERT,
                    [
                        service_row(f"did:kos:service:burst-{n}", metadata={"blob": blob, "n": n})
                        for n in range(start, start + BATCH)
                    ],
                )
            sample()


@pytest.mark.slow
async def test_a_hundred_streams_some_never_read_memory_stays_bounded(
    tmp_path: Path, db_url: str
) -> None:
    with serve(tmp_path, db_url) as node, ExitStack() as sockets:
        server = psutil.Process(node.popen.pid)
        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], server.memory_info().rss)

        async def readers_reach(tasks: list[asyncio.Task[list[str]]]) -> None:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.2)
                sample()

        start = head(db_url)
        half = f"{int(start) + BURST // 2:016d}"
        last = f"{int(start) + BURST:016d}"
        stalled = [
            sockets.enter_context(stalled_client(node.url, f"{STREAM}?since={start}"))
            for _ in range(STALLED)
        ]
        ports = {sock.getsockname()[1] for sock in stalled}
        opened = [asyncio.Event() for _ in range(READERS)]
        halfway = [asyncio.Event() for _ in range(READERS)]
        reading = [
            asyncio.create_task(read_ids(node.url, start, last, o, h))
            for o, h in zip(opened, halfway, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 60)
        while metric(node.url, "ronin_change_streams") < READERS + STALLED:
            await asyncio.sleep(0.1)
        sample()
        before = peak[0]
        # The first half fills what the stalled clients' sockets hold (and the server's
        # buffer of each, one chunk at most); the second would only pile up behind them.
        await burst(db_url, 0, BURST // 2, sample)
        waiting = [asyncio.create_task(event.wait()) for event in halfway]
        await readers_reach(waiting)
        first_half = peak[0]
        await burst(db_url, BURST // 2, BURST - BURST // 2, sample)
        expected = [cursor for cursor, _, _ in log(db_url)]
        assert len(expected) == BURST and expected[BURST // 2 - 1] == half
        assert expected[-1] == last
        await readers_reach(reading)
        for task in reading:
            assert task.result() == expected  # every change, once, in order
        event_bytes = 2 * len(last) + len(orjson.dumps({"blob": "x" * BLOB})) + 600
        second_half = peak[0] - first_half
        piled = STALLED * (BURST - BURST // 2) * event_bytes
        print(
            f"server RSS {before >> 20} MiB before, {first_half >> 20} MiB after the first half"
            f" (+{(first_half - before) >> 20}), {peak[0] >> 20} MiB after the second half"
            f" (+{second_half >> 20}); what the stalled clients would have piled up in the"
            f" second half: {piled >> 20} MiB"
        )
        assert second_half < piled / 2
        assert peak[0] - before < STALLED * BURST * event_bytes
        # The server lets go of the stalled clients: their streams end (SEND_TIMEOUT_S after
        # a send blocks), and so do their connections.
        deadline = time.monotonic() + 60
        while metric(node.url, "ronin_change_streams") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert metric(node.url, "ronin_change_streams") == 0
        while server_connections(node.popen.pid, ports) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert server_connections(node.popen.pid, ports) == 0, "stalled connections still held"

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
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack
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

from ronin.store.changes import CHANGE_TYPES, ChangeFeed
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


def serve(tmp_path: Path, db_url: str, **env: str) -> AbstractContextManager[Process]:
    """A node with no job slots, beating every half second."""
    return served_node(tmp_path, db_url, "--workers", "0", **(HEARTBEAT | env))


def log(db_url: str) -> list[tuple[str, str, str]]:
    """The change log, (cursor, type, service_id) in cursor order (every change numbered)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ronin_changes_sequence(true)")
        rows = conn.execute("SELECT seq, type, service_id FROM map_changes ORDER BY seq").fetchall()
    return [(f"{seq:016d}", kind, service_id) for seq, kind, service_id in rows]


def head(db_url: str) -> str:
    """The newest cursor, once every committed change has one (a sequencing pass first)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ronin_changes_sequence(true)")
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
        async with (
            await psycopg.AsyncConnection.connect(self.db_url) as conn,
            conn.transaction(),
        ):
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
            await conn.execute(
                "DELETE FROM discovered_services WHERE service_id = %s", (service_id,)
            )
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
    assert {kind for _, kind, _ in expected} == set(CHANGE_TYPES)
    changes = [event for event in follower.received if event.event != "heartbeat"]
    got = [(event.id, event.event, event.json()["service_id"]) for event in changes]
    assert got == expected
    assert all(event.json()["cursor"] == event.id for event in changes)
    ids = [event.id or "" for event in follower.received]
    assert ids == sorted(ids), "a heartbeat's cursor went back"
    heartbeats = [event for event in follower.received if event.event == "heartbeat"]
    assert heartbeats
    assert all(event.json() == {"cursor": event.id} for event in heartbeats)
    # The test did what it says: many cuts, events from both processes.
    assert follower.connections > 20
    assert follower.by_url.get(first.url, 0) > 0
    assert follower.by_url.get(second.url, 0) > 0


# --- 100 clients, 20 of which never read ----------------------------------------------------

READERS = 80
STALLED = 20
#: Changes written while the streams are open, the first FIRST of them before measuring.
BURST = 4000
FIRST = 1500
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
    url: str, since: str, until: str, opened: asyncio.Event, past_first: asyncio.Event
) -> list[str]:
    """The cursors of the change events of one stream, read as fast as they come, until
    ``until``; the bytes are split by hand (80 of these take 1.4 GB)."""
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
                assert first.startswith(b"id: ")
                assert second.startswith(b"event: ")
                cursor = first[4:].decode()
                if second != b"event: heartbeat":
                    ids.append(cursor)
                if len(ids) == FIRST:
                    past_first.set()
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

        async def readers_reach(tasks: list[asyncio.Task[Any]]) -> None:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.2)
                sample()

        start = head(db_url)
        first_last = f"{int(start) + FIRST:016d}"
        last = f"{int(start) + BURST:016d}"
        stalled = [
            sockets.enter_context(stalled_client(node.url, f"{STREAM}?since={start}"))
            for _ in range(STALLED)
        ]
        ports = {sock.getsockname()[1] for sock in stalled}
        opened = [asyncio.Event() for _ in range(READERS)]
        past_first = [asyncio.Event() for _ in range(READERS)]
        reading = [
            asyncio.create_task(read_ids(node.url, start, last, o, p))
            for o, p in zip(opened, past_first, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 60)
        while metric(node.url, "ronin_change_streams") < READERS + STALLED:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        sample()
        before = peak[0]
        # The first part fills what the stalled clients' sockets take (and the server's
        # buffer of each, one chunk at most): the rest could only pile up behind them, so it
        # must cost the server the ring's share of it, not one copy per stalled client.
        await burst(db_url, 0, FIRST, sample)
        waiting = [asyncio.create_task(event.wait()) for event in past_first]
        await readers_reach(waiting)
        after_first = peak[0]
        await burst(db_url, FIRST, BURST - FIRST, sample)
        expected = [cursor for cursor, _, _ in log(db_url)]
        assert len(expected) == BURST
        assert expected[FIRST - 1] == first_last
        assert expected[-1] == last
        await readers_reach(reading)
        for task in reading:
            assert task.result() == expected  # every change, once, in order
        event_bytes = 2 * len(last) + len(orjson.dumps({"blob": "x" * BLOB})) + 600
        second_growth = peak[0] - after_first
        piled = STALLED * (BURST - FIRST) * event_bytes
        print(
            f"server RSS {before >> 20} MiB before, {after_first >> 20} MiB after the first part"
            f" (+{(after_first - before) >> 20}), {peak[0] >> 20} MiB after the rest"
            f" (+{second_growth >> 20}); the stalled clients' share of the rest: {piled >> 20} MiB"
        )
        assert second_growth < piled / 2
        assert peak[0] - before < STALLED * BURST * event_bytes
        # The server lets go of the stalled clients: their streams end (SEND_TIMEOUT_S after
        # a send blocks), and so do their connections.
        deadline = time.monotonic() + 60
        while metric(node.url, "ronin_change_streams") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        assert metric(node.url, "ronin_change_streams") == 0
        while server_connections(node.popen.pid, ports) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        assert server_connections(node.popen.pid, ports) == 0, "stalled connections still held"
        # Cutting off a slow client is the protocol's ordinary answer to it, not a failure.
        assert "Traceback" not in node.log()


# --- cursors: expired, past the head, malformed -----------------------------------------------


def write(db_url: str, *rows: dict[str, Any]) -> None:
    with psycopg.connect(db_url) as conn:
        for row in rows:
            conn.execute(INSERT, row)


def expired(answer: httpx.Response, current: str) -> None:
    assert answer.status_code == 410, answer.text
    error = answer.json()["error"]
    assert error["code"] == "CURSOR_EXPIRED"
    assert error["cursor"] == current


async def test_a_cursor_from_before_what_is_kept_answers_410_and_the_current_one_resumes(
    tmp_path: Path, db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    write(db_url, *(service_row(f"did:kos:service:old-{n}") for n in range(5)))
    assert await ChangeFeed(pool).prune(timedelta(0)) == 5
    current = f"{5:016d}"
    with serve(tmp_path, db_url) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as client:
            # Pruned away, and past the newest change (a cursor of another database).
            for since in (ORIGIN, f"{4:016d}", f"{6:016d}", "9" * 16):
                expired(await client.get("/v1/changes", params={"since": since}), current)
                async with sse.stream(client, STREAM, params={"since": since}) as answer:
                    await answer.aread()
                    expired(answer, current)
                async with sse.stream(client, STREAM, last_event_id=since) as answer:
                    await answer.aread()
                    expired(answer, current)
            page = await client.get("/v1/changes", params={"since": current})
            assert page.status_code == 200
            assert page.json() == {"changes": [], "cursor": current, "more": False}
            # Last-Event-ID wins over since: a reconnecting client resumes where it was.
            async with sse.stream(
                client, STREAM, params={"since": ORIGIN}, last_event_id=current
            ) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                got = sse.events(answer)
                first = await anext(got)
                assert (first.event, first.id) == ("heartbeat", current)
                write(db_url, service_row("did:kos:service:new-0"))
                write(db_url, service_row("did:kos:service:new-1"))
                events = [await anext(got), await anext(got)]
                assert [(e.event, e.id) for e in events] == [
                    ("service_added", f"{6:016d}"),
                    ("service_added", f"{7:016d}"),
                ]
            page = await client.get("/v1/changes", params={"since": current})
            assert [c["cursor"] for c in page.json()["changes"]] == [f"{6:016d}", f"{7:016d}"]
            # Not a cursor Ronin issued: 400, on both routes, from since or Last-Event-ID.
            for bad in ("abc", "12", "0" * 17, "-" + "0" * 15, "\uff10" * 16, "0" * 15 + " "):
                answer = await client.get("/v1/changes", params={"since": bad})
                assert answer.status_code == 400, (bad, answer.text)
                assert answer.json()["error"]["code"] == "INVALID_CURSOR"
                async with sse.stream(client, STREAM, params={"since": bad}) as answer:
                    await answer.aread()
                    assert answer.status_code == 400, (bad, answer.text)
                    assert answer.json()["error"]["code"] == "INVALID_CURSOR"
                if bad.isascii() and bad == bad.strip():
                    async with sse.stream(client, STREAM, last_event_id=bad) as answer:
                        await answer.aread()
                        assert answer.status_code == 400, (bad, answer.text)
                        assert answer.json()["error"]["code"] == "INVALID_CURSOR"
        assert "Traceback" not in node.log()


# --- tokens -----------------------------------------------------------------------------------


async def test_the_feed_needs_a_token_when_tokens_are_configured(
    tmp_path: Path, db_url: str
) -> None:
    with serve(tmp_path, db_url, RONIN_API_TOKENS=TOKENS) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as client:
            for headers in ({}, {"Authorization": "Bearer not-a-token-0123456789"}):
                answer = await client.get("/v1/changes", headers=headers)
                assert answer.status_code == 401
                async with sse.stream(client, STREAM, headers=headers) as answer:
                    await answer.aread()
                    assert answer.status_code == 401
            read = {"Authorization": f"Bearer {READ}"}
            answer = await client.get("/v1/changes", headers=read)
            assert answer.status_code == 200
            current = answer.json()["cursor"]
            async with sse.stream(client, STREAM, headers=read) as answer:
                assert answer.status_code == 200
                first = await anext(sse.events(answer))
                assert (first.event, first.id) == ("heartbeat", current)


# --- filters ----------------------------------------------------------------------------------

FILTERS: list[list[tuple[str, str]]] = [
    [],
    [("capability", "packages"), ("capability", "mirror")],
    [("node_class", "griot")],
    [("node_id", "did:kos:griot:two")],
    [("capability", "packages"), ("node_class", "Griot"), ("node_id", "did:kos:griot:one")],
    [("node_id", "did:kos:griot:nobody")],
]


def selected(service: dict[str, Any], node_id: str, where: list[tuple[str, str]]) -> bool:
    """The filter applied by hand, to the service as the change recorded it."""
    for name, value in where:
        if name == "capability" and value not in service["capabilities"]:
            return False
        if name == "node_class" and service["node_class"].lower() != value.lower():
            return False
        if name == "node_id" and node_id != value:
            return False
    return True


def filtered_log(db_url: str, where: list[tuple[str, str]]) -> list[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ronin_changes_sequence(true)")
        rows = conn.execute("SELECT seq, node_id, service FROM map_changes ORDER BY seq").fetchall()
    return [f"{seq:016d}" for seq, node_id, service in rows if selected(service, node_id, where)]


async def read_until(answer: httpx.Response, cursor: str) -> tuple[list[str], list[str]]:
    """Change and heartbeat cursors, until a heartbeat at ``cursor``."""
    changes: list[str] = []
    heartbeats: list[str] = []
    async for event in sse.events(answer):
        assert event.id is not None
        if event.event != "heartbeat":
            assert event.json()["cursor"] == event.id
            changes.append(event.id)
            continue
        heartbeats.append(event.id)
        if event.id >= cursor:
            return changes, heartbeats
    raise AssertionError("the stream ended")


def filter_rows() -> Iterator[dict[str, Any]]:
    one, two = "did:kos:griot:one", "did:kos:griot:two"
    yield service_row("s:a", node_id=one, capabilities=("packages", "mirror"))
    yield service_row("s:b", node_id=one, node_class="Oracle", capabilities=("packages",))
    yield service_row("s:c", node_id=two, capabilities=("packages",))
    yield service_row("s:d", node_id=two, node_class="Other", capabilities=("mirror", "packages"))


async def test_stream_filters_select_exactly_the_matching_changes_and_heartbeats_advance(
    tmp_path: Path, db_url: str
) -> None:
    one, two = "did:kos:griot:one", "did:kos:griot:two"
    rows = list(filter_rows())
    # Before any stream: the streams start behind the hub's memory and read the table.
    write(db_url, *rows[:2])
    with serve(tmp_path, db_url) as node:
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as client,
            AsyncExitStack() as streams,
        ):
            answers = [
                await streams.enter_async_context(
                    sse.stream(client, STREAM, params=[("since", ORIGIN), *where])
                )
                for where in FILTERS
            ]
            assert all(answer.status_code == 200 for answer in answers)
            write(db_url, *rows[2:])
            with psycopg.connect(db_url) as conn:
                conn.execute(
                    "UPDATE discovered_services SET capabilities = '[\"packages\"]'"
                    " WHERE service_id = 's:a'"
                )
                conn.execute(
                    "UPDATE discovered_services SET node_id = %s WHERE service_id = 's:c'",
                    (one,),
                )
                conn.execute(
                    "UPDATE service_liveness SET state = 'suspect' WHERE service_id = 's:d'"
                )
                conn.execute("DELETE FROM discovered_services WHERE service_id = 's:b'")
                conn.execute("UPDATE service_liveness SET state = 'gone' WHERE service_id = 's:d'")
            write(db_url, service_row("s:e", node_id=two, capabilities=("mirror",)))
            final = head(db_url)
            for where, answer in zip(FILTERS, answers, strict=True):
                changes, heartbeats = await asyncio.wait_for(read_until(answer, final), 60)
                assert changes == filtered_log(db_url, where), where
                assert heartbeats[-1] == final
                page = await client.get(
                    "/v1/changes", params=[("since", ORIGIN), ("limit", "1000"), *where]
                )
                assert [c["cursor"] for c in page.json()["changes"]] == changes, where
    assert filtered_log(db_url, FILTERS[-1]) == []
    assert len(filtered_log(db_url, [])) > len(filtered_log(db_url, FILTERS[1])) > 0


# --- heartbeats -------------------------------------------------------------------------------


async def test_a_quiet_stream_beats_with_the_current_cursor(tmp_path: Path, db_url: str) -> None:
    write(db_url, *(service_row(f"did:kos:service:q-{n}") for n in range(3)))
    current = f"{3:016d}"
    with serve(tmp_path, db_url) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as client:
            for params in ({}, {"since": current}):
                async with sse.stream(client, STREAM, params=params) as answer:
                    assert answer.status_code == 200
                    assert answer.headers["cache-control"] == "no-store"
                    got = sse.events(answer)
                    for _ in range(2):
                        beat = await anext(got)
                        assert (beat.event, beat.id, beat.json()) == (
                            "heartbeat",
                            current,
                            {"cursor": current},
                        )
            async with sse.stream(client, STREAM, params={"since": ORIGIN}) as answer:
                changes, heartbeats = await asyncio.wait_for(read_until(answer, current), 60)
                assert changes == [f"{n:016d}" for n in (1, 2, 3)]
                assert heartbeats == [current]

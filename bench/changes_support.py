"""What ``bench/changes.py`` stands on: a cheap HTTP/1.1 client, the watchers of both feeds, the
watching process, and etcd started and stopped.

Run as ``python -m bench.changes_support KIND PORT WATCHERS START OUT``, this module is one
watching process: WATCHERS streams on 127.0.0.1:PORT, each on a connection of its own, all in
one uvloop event loop. KIND ``ronin`` opens ``GET /v1/changes/stream?since=START`` (Server-Sent
Events); KIND ``etcd`` opens ``POST /v3/watch`` on the key prefix START (etcd's JSON gateway).
It prints ``ready`` once every stream is established, then reads ``expect N`` from its standard
input: once every watcher has had N events (or ``DRAIN_TIMEOUT_S`` passed), it pickles what
each one received to OUT (``WatcherLog``) and prints ``done``.

A watcher keeps, for each event, the change's sequence number (which the writer put in the
endpoint or the value) and the wall time (``time.time()``) its bytes were read: one
``time.time()`` per read, every event in the read sharing it. Parsing is the least that finds
that number: chunked framing, event boundaries, one regular expression. A Ronin watcher the
server disconnects reconnects with ``Last-Event-ID``, as a client should; reconnections are
counted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import uvloop

from bench.harness import BenchError, log_tail, stop_process

READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 15.0
#: After every watcher has had its N events: how long to wait for duplicates.
LINGER_S = 0.5
RECONNECT_PAUSE_S = 0.05
#: The writer's marker: Ronin's endpoints end with it and the sequence number.
ENDPOINT_MARK = "/bench/"
RONIN_SEQ = re.compile(rb'/bench/(\d+)"')
ETCD_VALUE = re.compile(rb'"value":"([A-Za-z0-9+/=]*)"')
ETCD_STOP_GRACE_S = 10.0
ETCD = "etcd"


# --- A cheap HTTP/1.1 client -----------------------------------------------------------------


class Dechunker:
    """Undoes ``Transfer-Encoding: chunked``, fed any slices of the body."""

    def __init__(self) -> None:
        self._raw = b""
        self._left = 0  # bytes of the current chunk's data still to come
        self._skip = 0  # bytes of the CRLF after a chunk's data still to come
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes."""
        raw = self._raw + data if self._raw else data
        out: list[bytes] = []
        pos, size = 0, len(raw)
        while pos < size and not self.ended:
            if self._left:
                take = min(self._left, size - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._skip = 2
            elif self._skip:
                take = min(self._skip, size - pos)
                pos += take
                self._skip -= take
            else:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                length = int(raw[pos:end].split(b";", 1)[0], 16)
                pos = end + 2
                if length == 0:
                    self.ended = True
                self._left = length
        self._raw = raw[pos:]
        return b"".join(out)


def request_bytes(method: str, port: int, path: str, body: bytes = b"", **headers: str) -> bytes:
    """One HTTP/1.1 request to 127.0.0.1:``port``, keep-alive."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """A response's status and headers (names in lower case)."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


class HttpClient:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1, one request at a time: lighter than a
    general client, which matters at hundreds of requests a second on two cores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Status and body of one request (the connection opened on first use)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            sock = self._writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self._reader is not None
        self._writer.write(request_bytes(method, self.port, path, body))
        status, headers = parse_head((await self._reader.readuntil(b"\r\n\r\n"))[:-4])
        if "content-length" in headers:
            return status, await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise BenchError(f"{method} {path}: an answer without length: {headers}")
        parts: list[bytes] = []
        while True:
            length = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0], 16)
            if length == 0:
                await self._reader.readuntil(b"\r\n")
                return status, b"".join(parts)
            parts.append((await self._reader.readexactly(length + 2))[:-2])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


# --- The watchers ----------------------------------------------------------------------------


@dataclass(slots=True)
class WatcherLog:
    """What one watcher received: sequence numbers and the wall times they were read."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    #: Events with a cursor not above the one before (Ronin only: commit order).
    out_of_order: int = 0
    heartbeats: int = 0
    reconnects: int = 0
    error: str | None = None

    @classmethod
    def load(cls, path: Path) -> list[WatcherLog]:
        """The logs a watching process wrote."""
        return [cls(**fields) for fields in pickle.loads(path.read_bytes())]


class Watcher(asyncio.Protocol):
    """One stream: the response head, chunked framing, then ``on_body`` with each read's
    time. Subclasses say what to send and how to read the body."""

    def __init__(self, port: int, log: WatcherLog) -> None:
        self.port = port
        self.log = log
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._body: Dechunker | None = None
        self.stopping = False

    def request(self) -> bytes:
        raise NotImplementedError

    def on_body(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self.request())

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._body is None:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                return
            status, headers = parse_head(head[:end])
            if status != 200:
                self.fail(f"status {status}: {head[end + 4 :][:500]!r}")
                return
            if headers.get("transfer-encoding", "").lower() != "chunked":
                self.fail(f"a stream not chunked: {headers}")
                return
            self._body = Dechunker()
            self.established()
            data = head[end + 4 :]
        body = self._body.feed(data)
        if body:
            self.on_body(body, now)
        if self._body.ended and self.transport is not None:  # the server ended the stream
            self.transport.close()

    def established(self) -> None:
        """The response head came (a subclass may wait for more)."""
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, error: str) -> None:
        self.log.error = error
        if not self.ready.done():
            self.ready.set_exception(BenchError(error))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(BenchError(f"closed before the stream began: {exc}"))


class RoninWatcher(Watcher):
    """``GET /v1/changes/stream``: SSE events ``id: <cursor>``, ``event: <type>``,
    ``data: <change>``, blank line."""

    def __init__(self, port: int, log: WatcherLog, since: str) -> None:
        super().__init__(port, log)
        self.since = since
        self.last_id = 0
        self._events = b""

    def request(self) -> bytes:
        path = f"/v1/changes/stream?since={self.since}"
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = f"{self.last_id:016d}"
        return request_bytes("GET", self.port, path, **headers)

    def on_body(self, data: bytes, now: float) -> None:
        events = self._events + data if self._events else data
        if b"\r" in events:  # SSE allows CRLF line ends: read them as LF
            events = events.replace(b"\r\n", b"\n")
        start, log = 0, self.log
        while True:
            end = events.find(b"\n\n", start)
            if end < 0:
                break
            block = events[start:end]
            start = end + 2
            if block.startswith(b"id: "):
                cursor = int(block[4 : block.index(b"\n")])
                if cursor <= self.last_id and b"event: heartbeat" not in block:
                    log.out_of_order += 1
                self.last_id = max(self.last_id, cursor)
            found = RONIN_SEQ.search(block)
            if found is None:
                if b"event: heartbeat" in block:
                    log.heartbeats += 1
                continue
            log.seqs.append(int(found[1]))
            log.times.append(now)
        self._events = events[start:]


class EtcdWatcher(Watcher):
    """``POST /v3/watch`` on a prefix: one JSON message per line; the first says ``created``."""

    def __init__(self, port: int, log: WatcherLog, prefix: str) -> None:
        super().__init__(port, log)
        self.prefix = prefix
        self._lines = b""
        self._created = False

    def request(self) -> bytes:
        key = self.prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        body = b'{"create_request":{"key":"%s","range_end":"%s"}}' % (
            base64.b64encode(key),
            base64.b64encode(end),
        )
        return request_bytes("POST", self.port, "/v3/watch", body)

    def established(self) -> None:
        """Not before etcd says the watch is created."""

    def on_body(self, data: bytes, now: float) -> None:
        lines = self._lines + data if self._lines else data
        end = lines.rfind(b"\n")
        if end < 0:
            self._lines = lines
            return
        complete, self._lines = lines[:end], lines[end + 1 :]
        if not self._created and b'"created":true' in complete:
            self._created = True
            if not self.ready.done():
                self.ready.set_result(None)
        log = self.log
        for value in ETCD_VALUE.findall(complete):
            log.seqs.append(int(base64.b64decode(value)))
            log.times.append(now)


# --- The watching process --------------------------------------------------------------------


async def keep_ronin(slots: list[Watcher], index: int) -> None:
    """Reconnect a Ronin watcher the server disconnects, from its last event."""
    loop = asyncio.get_running_loop()
    while True:
        watcher = slots[index]
        assert isinstance(watcher, RoninWatcher)
        await watcher.closed
        if watcher.stopping or watcher.log.error is not None:
            return
        watcher.log.reconnects += 1
        await asyncio.sleep(RECONNECT_PAUSE_S)
        fresh = RoninWatcher(watcher.port, watcher.log, watcher.since)
        fresh.last_id = watcher.last_id
        slots[index] = fresh
        await loop.create_connection(lambda w=fresh: w, "127.0.0.1", watcher.port)  # type: ignore[misc]


async def watch(kind: str, port: int, count: int, start: str, out: Path) -> None:
    """Open ``count`` streams, say ``ready``, await ``expect N``, drain, write the logs."""
    logs = [WatcherLog() for _ in range(count)]
    loop = asyncio.get_running_loop()
    slots: list[Watcher] = []
    for log in logs:
        watcher: Watcher
        if kind == "ronin":
            watcher = RoninWatcher(port, log, start)
        else:
            watcher = EtcdWatcher(port, log, start)
        await loop.create_connection(lambda w=watcher: w, "127.0.0.1", port)  # type: ignore[misc]
        slots.append(watcher)
    async with asyncio.timeout(READY_TIMEOUT_S):
        await asyncio.gather(*(w.ready for w in slots))
    keepers = []
    if kind == "ronin":
        keepers = [asyncio.create_task(keep_ronin(slots, i)) for i in range(count)]
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = (await reader.readline()).decode().split()
    expected = int(line[1]) if len(line) == 2 and line[0] == "expect" else 0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(len(log.seqs) >= expected or log.error for log in logs):
            await asyncio.sleep(LINGER_S)
            break
        await asyncio.sleep(0.02)
    for keeper in keepers:
        keeper.cancel()
    for watcher in slots:
        watcher.stopping = True
        if watcher.transport is not None:
            watcher.transport.close()
    # As plain data: run as __main__, this module's classes would not unpickle elsewhere.
    out.write_bytes(pickle.dumps([asdict(log) for log in logs]))  # noqa: ASYNC240 (once)
    print("done", flush=True)


def main(argv: list[str]) -> int:
    """``KIND PORT WATCHERS START OUT``: be one watching process."""
    if len(argv) != 5 or argv[0] not in ("ronin", "etcd"):
        print(
            "usage: python -m bench.changes_support ronin|etcd PORT WATCHERS START OUT",
            file=sys.stderr,
        )
        return 2
    kind, port, count, start, out = argv
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(watch(kind, int(port), int(count), start, Path(out)))
    return 0


# --- etcd ------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def etcd_version() -> str | None:
    """etcd's version line, or None if it is not installed."""
    if shutil.which(ETCD) is None:
        return None
    done = subprocess.run([ETCD, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0].strip() if done.stdout else "etcd (version unknown)"


@dataclass(slots=True)
class Etcd:
    """A running etcd: its pid, client port and log."""

    pid: int
    port: int
    log: Path
    exit_code: int | None = None


@asynccontextmanager
async def etcd_process(log: Path) -> AsyncIterator[Etcd]:
    """A single-member etcd on free loopback ports with a data dir of its own; stopped and its
    dir deleted on the way out, whatever happened."""
    client, peer = free_ports(2)
    data_dir = Path(tempfile.mkdtemp(prefix="ronin-bench-etcd-"))
    peer_url, client_url = f"http://127.0.0.1:{peer}", f"http://127.0.0.1:{client}"
    command = [ETCD, "--name", "bench", "--data-dir", str(data_dir / "data")]
    command += ["--listen-client-urls", client_url, "--advertise-client-urls", client_url]
    command += ["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url]
    command += ["--initial-cluster", f"bench={peer_url}", "--initial-cluster-state", "new"]
    command += ["--logger", "zap", "--log-level", "warn"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=descriptor,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(descriptor)
    served = Etcd(process.pid, client, log)
    try:
        await wait_etcd(process, client, log)
        yield served
    finally:
        served.exit_code = await stop_process(process, grace_s=ETCD_STOP_GRACE_S)
        shutil.rmtree(data_dir, ignore_errors=True)


async def wait_etcd(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    """Until etcd answers a put (it has a leader); BenchError if it exits or is slow."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    body = b'{"key":"%s","value":""}' % base64.b64encode(b"ready")
    while True:
        client = HttpClient(port)
        try:
            status, _ = await client.request("POST", "/v3/kv/put", body)
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            await client.close()
        if process.returncode is not None:
            raise BenchError(f"etcd exited {process.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"etcd not ready after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log)}")
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

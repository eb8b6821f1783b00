"""The test fleet: honest kOS nodes and hostile ones, on loopback addresses, in this process.

Linux routes all of 127.0.0.0/8 to the loopback interface and lets a socket bind any address
in it without setup, so a /20 of "machines" costs nothing but sockets:

- honest nodes are beacons (``ronin.beacon.BeaconServer``: thousands in one process, each
  descriptor encoded once, descriptor GETs counted per node);
- a ``HostileServer`` runs nodes that misbehave in one named way each (``BEHAVIOURS``), with
  byte-level control, so a Ronin's probe can be shown to survive them;
- a ``ConnectionRecorder`` only counts connections, to prove that an address outside the scope
  policy was never contacted.

Every wait here is bounded and ``close()`` is prompt, whatever a client left half done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import json
import random
import resource
import socket
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from ronin.beacon import (
    KOS_PORT,
    BeaconServer,
    ServiceSpec,
    base_url,
    demo_descriptor,
    descriptor_url,
    make_descriptor,
)
from ronin.discovery.descriptor import CANONICAL_CLASSES

DEFAULT_NETWORK: Final = "127.42.0.0/20"
#: A hostile node waits this long for a request's head before it gives up on the client.
HEAD_TIMEOUT_S: Final = 5.0
#: How long ``close()`` waits for connection tasks and listeners once it has cancelled them.
CLOSE_TIMEOUT_S: Final = 2.0
HUGE_SIZE: Final = 50 * 1024 * 1024
GZIP_BOMB_SIZE: Final = 1024 * 1024 * 1024
_CHUNK: Final = 256 * 1024
_PADDING_PREFIX: Final = (
    b'{"kos":"1.0","node_id":"did:kos:griot:hostile","node_class":"Griot","services":[],"padding":"'
)
_PADDING_SUFFIX: Final = b'"}'

#: A few capabilities per canonical class, so that capability searches over a fleet find some
#: nodes and not others. Every node also offers ``node_status`` (see ``demo_descriptor``).
CLASS_CAPABILITIES: Final[Mapping[str, tuple[str, ...]]] = {
    "Griot": ("package_distribution", "knowledge_preservation"),
    "Tohunga": ("ritual_scheduling", "knowledge_preservation"),
    "Ronin": ("service_discovery", "network_mapping"),
    "Musa": ("media_synthesis",),
    "Hakim": ("health_monitoring", "diagnostics"),
    "Skald": ("event_logging", "narrative_synthesis"),
    "Oracle": ("inference", "forecasting"),
    "Junzi": ("governance", "policy_review"),
    "Yachay": ("knowledge_preservation", "search"),
    "Sachem": ("coordination", "consensus"),
    "Archon": ("access_control", "governance"),
    "Amauta": ("teaching", "search"),
    "Mzee": ("archival", "knowledge_preservation"),
}


def addresses(network: str = DEFAULT_NETWORK, count: int = 256, seed: int = 0) -> list[str]:
    """``count`` distinct host addresses of ``network``, spread over it, the same for a seed.

    The network and broadcast addresses are never chosen; the list is in address order.
    """
    net = ipaddress.ip_network(network, strict=False)
    first, usable = int(net.network_address) + 1, max(net.num_addresses - 2, 0)
    if net.num_addresses <= 2:
        first, usable = int(net.network_address), net.num_addresses
    if count > usable:
        raise ValueError(f"{network} has {usable} host addresses, not {count}")
    offsets = sorted(random.Random(seed).sample(range(usable), count))
    return [str(ipaddress.ip_address(first + offset)) for offset in offsets]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (give it to a beacon fleet or a process)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit to ``needed`` (4,096 beacons need 4,096 sockets and more).

    Fails with ``OSError`` if the hard limit is lower: the test cannot run on such a machine.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(f"the open-files hard limit is {hard}; {needed} are needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# -- honest nodes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Beacon:
    """One honest node of a fleet: where it listens and what it serves."""

    host: str
    port: int
    descriptor: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        """The node's key in ``BeaconServer.requests``."""
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """The node's base URL, as a peer list names it."""
        return base_url(self.host, self.port)

    @property
    def descriptor_url(self) -> str:
        return descriptor_url(self.host, self.port)

    @property
    def node_id(self) -> str:
        return str(self.descriptor["node_id"])

    @property
    def service_ids(self) -> list[str]:
        return [str(service["service_id"]) for service in self.descriptor["services"]]


def chain(count: int) -> dict[int, list[int]]:
    """Peers as a line, node i naming node i + 1: depth N reaches exactly N nodes from node 0."""
    return {index: [index + 1] for index in range(count - 1)}


async def honest_fleet(
    server: BeaconServer,
    hosts: Sequence[str],
    port: int = KOS_PORT,
    *,
    node_classes: Sequence[str] = CANONICAL_CLASSES,
    peers: Mapping[int, Sequence[int]] | None = None,
    extra_peers: Mapping[int, Sequence[str]] | None = None,
) -> list[Beacon]:
    """One demo node per host on ``port``, classes taken in turn from ``node_classes``.

    ``peers`` maps a node's index to the indexes of the nodes it names (as base URLs);
    ``extra_peers`` adds raw peer strings (a DID, an out-of-scope URL).
    """
    fleet = []
    for index, host in enumerate(hosts):
        node_class = node_classes[index % len(node_classes)]
        named = [base_url(hosts[peer], port) for peer in (peers or {}).get(index, ())]
        named += list((extra_peers or {}).get(index, ()))
        descriptor = demo_descriptor(
            host,
            port,
            node_class,
            CLASS_CAPABILITIES.get(node_class, ("general",)),
            peers=named,
        )
        await server.add(host, port, descriptor)
        fleet.append(Beacon(host, port, descriptor))
    return fleet


# -- hostile nodes ----------------------------------------------------------------------------

BEHAVIOURS: Final = (
    "refuse",
    "reset",
    "hang",
    "slow_drip",
    "endless",
    "huge",
    "gzip_bomb",
    "invalid_json",
    "wrong_types",
    "nul_bytes",
    "overlong_ids",
    "overlong_node_class",
    "redirect_loop",
    "redirect_out_of_scope",
    "not_json_content_type",
    "http_500",
    "bad_http",
)
#: The options each behaviour takes (anything else is refused by ``HostileServer.add``).
OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "slow_drip": frozenset({"interval_s"}),
    "huge": frozenset({"size"}),
    "gzip_bomb": frozenset({"inflated_size"}),
    "redirect_out_of_scope": frozenset({"location"}),
}


def hostile_document(behaviour: str, host: str, port: int) -> bytes:
    """The body a hostile node with a *content* behaviour serves (200, application/json).

    - ``invalid_json``: a truncated document.
    - ``wrong_types``: every required field of the wrong JSON type.
    - ``nul_bytes``: valid JSON with ``\\u0000`` in ``node_class`` and in one ``service_id``.
    - ``overlong_ids``: a 300-character ``service_id`` beside one valid service, so a probe can
      show that it skips the bad service and keeps the good one.
    - ``overlong_node_class``: a 101-character ``node_class`` in an otherwise valid document.
      It is a behaviour of its own because the class belongs to the node: an overlong one fails
      the whole host, which would hide the partial acceptance ``overlong_ids`` tests.
    """
    node = demo_descriptor(host, port, "Griot")
    short = node["node_id"].rsplit(":", 1)[1]
    endpoint = f"{base_url(host, port)}/klf"
    valid = ServiceSpec(f"did:kos:service:{short}:valid", endpoint, ("node_status",))
    if behaviour == "invalid_json":
        return json.dumps(node).encode()[:-40] + b', "services": [{"service_id": '
    if behaviour == "wrong_types":
        document = {
            "kos": 1.0,
            "node_id": 42,
            "node_class": ["Griot"],
            "services": "lots",
            "peers": {"http://127.0.0.1:30437": True},
            "hieros_compliance": "yes",
        }
        return json.dumps(document).encode()
    if behaviour == "nul_bytes":
        nul = ServiceSpec(f"did:kos:service:{short}:nul\u0000byte", endpoint, ("node_status",))
        return json.dumps(make_descriptor(node["node_id"], "Gri\u0000ot", [nul, valid])).encode()
    if behaviour == "overlong_ids":
        prefix = f"did:kos:service:{short}:"
        long_id = prefix + "x" * (300 - len(prefix))
        overlong = ServiceSpec(long_id, endpoint, ("package_distribution",))
        return json.dumps(make_descriptor(node["node_id"], "Griot", [overlong, valid])).encode()
    if behaviour == "overlong_node_class":
        return json.dumps(make_descriptor(node["node_id"], "G" * 101, [valid])).encode()
    raise ValueError(f"{behaviour!r} is not a content behaviour")


@functools.cache
def gzip_bomb(inflated_size: int = GZIP_BOMB_SIZE) -> bytes:
    """A gzip member that inflates to ``inflated_size`` bytes of a JSON document.

    The document is ``{"kos":"1.0",...,"padding":"000...0"}``. Deflate cannot beat about
    1,032:1, so 1 GiB costs about 1 MB on the wire (50 KB inflates to about 50 MB). Built
    without compressing a gigabyte: after a full flush the compressor starts afresh, so one
    compressed 1 MiB block of zeros is repeated. The CRC and size trailer are correct.
    """
    filler = inflated_size - len(_PADDING_PREFIX) - len(_PADDING_SUFFIX)
    if filler < 0:
        raise ValueError(f"a gzip bomb inflates to at least {inflated_size - filler} bytes")
    block = b"0" * (1024 * 1024)
    whole, rest = divmod(filler, len(block))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(_PADDING_PREFIX) + compressor.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(_PADDING_PREFIX)
    if whole:
        parts.append((compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)) * whole)
        for _ in range(whole):
            crc = zlib.crc32(block, crc)
    tail = block[:rest] + _PADDING_SUFFIX
    parts.append(compressor.compress(tail) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(tail, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no mtime
    trailer = struct.pack("<II", crc, inflated_size & 0xFFFFFFFF)
    return header + b"".join(parts) + trailer


def _response(status: str, content_type: str, body: bytes, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def _head(status: str, content_type: str, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileServer:
    """Hostile kOS nodes, one behaviour per (host, port); ``connections`` counts accepts."""

    def __init__(self) -> None:
        self.connections: collections.Counter[tuple[str, int]] = collections.Counter()
        self.behaviours: dict[tuple[str, int], str] = {}
        self._servers: list[asyncio.Server] = []
        self._reserved: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def add(self, host: str, port: int, behaviour: str, **options: Any) -> tuple[str, int]:
        """Run a node that does ``behaviour`` at ``host:port`` (port 0: any); returns its key.

        ``refuse`` binds the address without listening, so a connection is refused and nothing
        else can take the address while the test runs.
        """
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        unknown = set(options) - OPTIONS.get(behaviour, frozenset())
        if unknown:
            raise TypeError(f"{behaviour} takes no option {sorted(unknown)[0]!r}")
        if behaviour == "redirect_out_of_scope" and "location" not in options:
            raise TypeError("redirect_out_of_scope needs location=<URL>")
        if behaviour == "refuse":
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            self._reserved.append(sock)
            key = (host, int(sock.getsockname()[1]))
            self.behaviours[key] = behaviour
            return key
        routes: list[tuple[tuple[str, int], Handler]] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connection(*routes[0], reader, writer)

        server = await asyncio.start_server(on_connect, host, port)
        key = (host, int(server.sockets[0].getsockname()[1]))
        try:
            # No await until the route is set: no connection can be served before it is.
            routes.append((key, self._handler(behaviour, key, options)))
        except BaseException:
            server.close()
            raise
        self._servers.append(server)
        self.behaviours[key] = behaviour
        return key

    async def close(self) -> None:
        """Stop every node now: listeners closed, connection tasks cancelled, sockets aborted."""
        self._closing = True
        for server in self._servers:
            server.close()
        for sock in self._reserved:
            sock.close()
        await asyncio.sleep(0)  # connections accepted just now see _closing and end
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)
        self._servers.clear()
        self._reserved.clear()

    async def _connection(
        self,
        key: tuple[str, int],
        handler: Handler,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.connections[key] += 1
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.transport.abort()
            return
        self._tasks.add(task)
        graceful = False
        try:
            await handler(reader, writer)
            graceful = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away or never asked: nothing to tell anyone
        except asyncio.CancelledError:
            # close() cancelled us. End normally: Python 3.11's start_server callback calls
            # task.exception() on a cancelled task and logs the CancelledError it raises.
            if not self._closing:
                raise
        finally:
            self._tasks.discard(task)
            if graceful:
                writer.close()  # a FIN once what was written has gone out
            else:
                writer.transport.abort()

    def _handler(self, behaviour: str, key: tuple[str, int], options: dict[str, Any]) -> Handler:
        host, port = key

        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_head(reader)
            writer.write(answer)
            await writer.drain()

        if behaviour in ("invalid_json", "wrong_types", "nul_bytes") or behaviour.startswith(
            "overlong_"
        ):
            answer = _response(
                "200 OK", "application/json", hostile_document(behaviour, host, port)
            )
            return reply
        if behaviour in ("redirect_loop", "redirect_out_of_scope"):
            location = options.get("location", descriptor_url(host, port))
            answer = _response("302 Found", "text/plain", b"moved\n", Location=location)
            return reply
        if behaviour == "not_json_content_type":
            page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>\n"
            answer = _response("200 OK", "text/html; charset=utf-8", page)
            return reply
        if behaviour == "http_500":
            answer = _response("500 Internal Server Error", "text/plain", b"internal error\n")
            return reply
        if behaviour == "bad_http":
            answer = b"\x00\xffSSH-2.0-garbage instead of an HTTP status line\r\n\r\n"
            return reply
        if behaviour == "gzip_bomb":
            bomb = gzip_bomb(int(options.get("inflated_size", GZIP_BOMB_SIZE)))
            answer = _response("200 OK", "application/json", bomb, Content_Encoding="gzip")
            return reply
        if behaviour == "huge":
            return functools.partial(_huge, size=int(options.get("size", HUGE_SIZE)))
        if behaviour == "slow_drip":
            return functools.partial(_slow_drip, interval_s=float(options.get("interval_s", 1.0)))
        return {"reset": _reset, "hang": _hang, "endless": _endless}[behaviour]


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers (bounded wait); the request body, if any, is ignored."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, then close with SO_LINGER 0: the kernel sends RST, not FIN."""
    await _read_head(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and read, never answer; end only when the client gives up."""
    while await reader.read(65536):
        pass


async def _slow_drip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, interval_s: float
) -> None:
    """Valid headers (a body delimited by close), then one byte per interval, forever."""
    await _read_head(reader)
    writer.write(_head("200 OK", "application/json"))
    await writer.drain()
    index = 0
    while True:
        byte = _PADDING_PREFIX[index : index + 1] or b"0"
        index += 1
        writer.write(byte)
        await writer.drain()
        await asyncio.sleep(interval_s)


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chunked body that never ends, as fast as the client reads it."""
    await _read_head(reader)
    writer.write(_head("200 OK", "application/json", Transfer_Encoding="chunked"))
    chunk = b"0" * _CHUNK
    writer.write(b"%x\r\n%s\r\n" % (len(_PADDING_PREFIX), _PADDING_PREFIX))
    while True:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()


async def _huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, size: int) -> None:
    """Content-Length ``size`` of valid-looking JSON, sent as fast as the client reads it."""
    await _read_head(reader)
    writer.write(_head("200 OK", "application/json", Content_Length=str(size)))
    writer.write(_PADDING_PREFIX)
    remaining = size - len(_PADDING_PREFIX) - len(_PADDING_SUFFIX)
    chunk = memoryview(b"0" * _CHUNK)
    while remaining > 0:
        writer.write(chunk[: min(remaining, _CHUNK)])
        remaining -= _CHUNK
        await writer.drain()
    writer.write(_PADDING_SUFFIX)
    await writer.drain()


# -- out-of-scope witnesses -------------------------------------------------------------------


class _Count(asyncio.Protocol):
    def __init__(self, recorder: ConnectionRecorder, key: tuple[str, int]) -> None:
        self._recorder, self._key = recorder, key

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._recorder.connections[self._key] += 1
        transport.close()


class ConnectionRecorder:
    """Plain TCP listeners that count accepted connections and close them at once.

    Put one where a test's scope policy forbids going (a redirect's target, a peer outside the
    allowed networks): ``connections[key] == 0`` afterwards proves nothing was sent there.
    """

    def __init__(self) -> None:
        self.connections: collections.Counter[tuple[str, int]] = collections.Counter()
        self._servers: list[asyncio.Server] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def total(self) -> int:
        return sum(self.connections.values())

    async def add(self, host: str, port: int = 0) -> tuple[str, int]:
        """Listen at ``host:port`` (port 0: any); returns the key of ``connections``."""
        loop = asyncio.get_running_loop()
        keys: list[tuple[str, int]] = []
        server = await loop.create_server(lambda: _Count(self, keys[0]), host, port)
        keys.append((host, int(server.sockets[0].getsockname()[1])))
        self._servers.append(server)
        return keys[0]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)
        self._servers.clear()

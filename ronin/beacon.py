"""A beacon: the smallest kOS node, serving one descriptor (PROTOCOL.md section 2).

Ronin discovers kOS nodes; a beacon gives it something to discover. ``ronin beacon`` runs one
for a demo or a manual test, and the test fleet runs thousands in one process, so a beacon costs
one listening socket and nothing else: every (host, port) shares one low-level ``aiohttp`` server
(one protocol factory, no ``Application``, no router, no access log), and each descriptor is
encoded to bytes once, when it is added.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from ronin.discovery.descriptor import DESCRIPTOR_PATH as DESCRIPTOR_PATH
from ronin.discovery.descriptor import base_url as base_url
from ronin.discovery.params import KOS_PORT as KOS_PORT
from ronin.errors import InvalidValue

KOS_VERSION: Final = "1.0"
DEFAULT_PROTOCOLS: Final = ("klf/1.0", "http/1.1")
DEFAULT_CAPABILITIES: Final = ("package_distribution", "knowledge_preservation")
MAX_ID_CHARS: Final = 255
MAX_NODE_CLASS_CHARS: Final = 100
MAX_CAPABILITIES: Final = 128
MAX_CAPABILITY_CHARS: Final = 128
MAX_SERVICES: Final = 256
MAX_PEERS: Final = 1024
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
#: How long ``close()`` lets an in-flight request finish before its connection is dropped.
CLOSE_GRACE_S: Final = 1.0

DID_PATTERN: Final = re.compile(r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$")
CAPABILITY_PATTERN: Final = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_JSON_HEADERS: Final = {"Content-Type": "application/json"}

#: A descriptor as a beacon takes it: a JSON object, or the exact bytes to serve.
Descriptor = dict[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service a node announces: the part of a descriptor that becomes a row of the map."""

    service_id: str
    endpoint: str
    capabilities: tuple[str, ...]
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS


def codex_hash(node_id: str) -> str:
    """A stand-in HIEROS codex hash: 64 hex characters, stable for a node."""
    return hashlib.sha256(node_id.encode()).hexdigest()


def make_descriptor(
    node_id: str,
    node_class: str,
    services: Sequence[ServiceSpec],
    peers: Sequence[str] = (),
    hieros_verified: bool = False,
) -> dict[str, Any]:
    """A node descriptor in exactly PROTOCOL.md section 2's shape.

    Nothing is validated here on purpose: tests build broken documents with it too.
    """
    return {
        "kos": KOS_VERSION,
        "node_id": node_id,
        "node_class": node_class,
        "services": [
            {
                "service_id": service.service_id,
                "endpoint": service.endpoint,
                "capabilities": list(service.capabilities),
                "protocols": list(service.protocols),
            }
            for service in services
        ],
        "peers": list(peers),
        "hieros_compliance": {"verified": hieros_verified, "codex_hash": codex_hash(node_id)},
    }


def demo_descriptor(
    host: str,
    port: int,
    node_class: str = "Griot",
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
    *,
    peers: Sequence[str] = (),
) -> dict[str, Any]:
    """A plausible node at ``host:port`` whose ids derive from the address, so a fleet is stable.

    Two services share the node's KLF endpoint: ``main`` with ``capabilities`` and ``status``
    with ``node_status``, so every demo node has a service that a capability search can find.
    """
    short = hashlib.sha256(f"{host}:{port}".encode()).hexdigest()[:12]
    node_kind = re.sub(r"[^a-z0-9]", "", node_class.lower()) or "node"
    endpoint = f"{base_url(host, port)}/klf"
    services = (
        ServiceSpec(f"did:kos:service:{short}:main", endpoint, tuple(capabilities)),
        ServiceSpec(f"did:kos:service:{short}:status", endpoint, ("node_status",)),
    )
    return make_descriptor(f"did:kos:{node_kind}:{short}", node_class, services, peers)


def encode_descriptor(descriptor: Descriptor) -> bytes:
    """The bytes a beacon serves: compact JSON, or ``descriptor`` as given if already bytes."""
    if isinstance(descriptor, bytes):
        return descriptor
    return json.dumps(descriptor, separators=(",", ":"), ensure_ascii=False).encode()


def check_host(host: str) -> str:
    """An IP address (IPv6 brackets stripped) or an RFC 1123 host name; ``InvalidValue`` else."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(bare))
    labels = bare.removesuffix(".").split(".")
    if (
        len(bare) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()  # 127.0.0.999 is a broken address, not a name
    ):
        return bare.removesuffix(".")
    raise InvalidValue(f"--host {host!r} is neither an IP address nor a host name", field="host")


def check_capabilities(capabilities: Sequence[str]) -> tuple[str, ...]:
    """Capabilities as PROTOCOL.md section 1 allows them (distinct, at most 128, 1..128 chars)."""
    unique = tuple(dict.fromkeys(capabilities))
    if len(unique) > MAX_CAPABILITIES:
        raise InvalidValue(f"at most {MAX_CAPABILITIES} capabilities", field="capability")
    for capability in unique:
        if not CAPABILITY_PATTERN.match(capability):
            raise InvalidValue(
                f"capability {capability!r} must be 1 to 128 characters of A-Z a-z 0-9 . _ : / -",
                field="capability",
            )
    return unique


def check_node_class(node_class: str) -> str:
    """A node class as PROTOCOL.md section 1 allows it: 1 to 100 printable characters."""
    if not 1 <= len(node_class) <= MAX_NODE_CLASS_CHARS or not node_class.isprintable():
        raise InvalidValue(
            f"node class {node_class!r} must be 1 to 100 printable characters", field="node_class"
        )
    return node_class


def check_peer(peer: str) -> str:
    """A peer as a descriptor lists it: a DID or an absolute http(s)/ws(s) URL."""
    if DID_PATTERN.match(peer) and len(peer) <= MAX_ID_CHARS:
        return peer
    if re.match(r"^(https?|wss?)://[^\s/?#]+", peer) and len(peer) <= 2048:
        return peer
    raise InvalidValue(f"peer {peer!r} is neither a DID nor an http(s)/ws(s) URL", field="peer")


def load_descriptor_file(path: Path) -> bytes:
    """A descriptor file's bytes, served verbatim once they parse as JSON; ``InvalidValue`` else.

    Only JSON is required (not the protocol's shape), so an operator can serve a broken
    descriptor on purpose and watch a Ronin refuse it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidValue(
            f"cannot read {path}: {exc.strerror or exc}", field="descriptor"
        ) from None
    try:
        json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidValue(f"{path} is not valid JSON: {exc}", field="descriptor") from None
    return data


def beacon_descriptor(
    descriptor_file: Path | None,
    node_class: str = "Griot",
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
    peers: Sequence[str] = (),
) -> Callable[[str, int], Descriptor]:
    """What ``ronin beacon`` serves: the file's bytes, or a demo node built from its flags.

    Every flag is checked now (``InvalidValue``), before a socket is opened; the demo node is
    built once the beacon is bound, so that on port 0 its ids and endpoint name the real port.
    """
    if descriptor_file is not None:
        document = load_descriptor_file(descriptor_file)
        return lambda _host, _port: document
    node_class = check_node_class(node_class)
    capabilities = check_capabilities(capabilities)
    peers = [check_peer(peer) for peer in peers]
    return lambda host, port: demo_descriptor(host, port, node_class, capabilities, peers=peers)


def node_id_of(body: bytes) -> str | None:
    """The ``node_id`` a served document claims, if it is a JSON object with a string one."""
    with contextlib.suppress(ValueError):
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("node_id"), str):
            return str(document["node_id"])
    return None


def descriptor_url(host: str, port: int) -> str:
    """Where a node at ``host:port`` serves its descriptor."""
    return f"{base_url(host, port)}{DESCRIPTOR_PATH}"


class BeaconServer:
    """Many beacons in one process: one shared aiohttp protocol factory, one socket per beacon.

    A request is routed by the local address its connection arrived on, so adding a beacon is
    one ``create_server`` call and a dict entry. ``requests`` counts descriptor GETs per
    (host, port), which lets tests prove that a Ronin never probed a node twice.
    """

    def __init__(self) -> None:
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self._bodies: dict[tuple[str, int], bytes] = {}
        # Bound socket address -> the (host, port) key it serves: "localhost" may bind several.
        self._routes: dict[tuple[str, int], tuple[str, int]] = {}
        self._listeners: list[asyncio.Server] = []
        self._web: web.Server | None = None
        self._closed = False

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
    def beacons(self) -> list[tuple[str, int]]:
        """Every (host, port) served, in the order added."""
        return list(self._bodies)

    async def add(
        self, host: str, port: int, descriptor: Descriptor | Callable[[str, int], Descriptor]
    ) -> tuple[str, int]:
        """Serve ``descriptor`` at ``http://host:port/.well-known/kos-node``.

        ``descriptor`` may be a function of the bound (host, port), for a beacon on port 0
        whose document names its own port. Returns the (host, port) key of ``requests``. An
        ``OSError`` (address in use, not local) propagates and nothing is added.
        """
        if self._closed:
            raise RuntimeError("BeaconServer is closed")
        loop = asyncio.get_running_loop()
        if self._web is None:
            self._web = web.Server(self._handle, access_log=None)
        listener = await loop.create_server(self._web, host, port)
        sockets = [sock.getsockname() for sock in listener.sockets]
        key = (host, sockets[0][1])
        try:
            if key in self._bodies:
                raise RuntimeError(f"a beacon already serves {host}:{key[1]}")
            body = encode_descriptor(descriptor(*key) if callable(descriptor) else descriptor)
        except BaseException:
            listener.close()
            raise
        self._listeners.append(listener)
        self._bodies[key] = body
        for sockname in sockets:
            self._routes[(sockname[0], sockname[1])] = key
        return key

    def replace(self, key: tuple[str, int], descriptor: Descriptor) -> None:
        """Serve ``descriptor`` from now on at the beacon ``key``: a node that changed."""
        if key not in self._bodies:
            raise KeyError(key)
        self._bodies[key] = encode_descriptor(descriptor)

    def body(self, key: tuple[str, int]) -> bytes:
        """The exact bytes the beacon at ``key`` serves."""
        return self._bodies[key]

    async def close(self) -> None:
        """Stop listening everywhere, then close every connection within ``CLOSE_GRACE_S``."""
        self._closed = True
        for listener in self._listeners:
            listener.close()
        if self._web is not None:
            # Yield once so that requests accepted just before are seen, as aiohttp's runner does.
            await asyncio.sleep(0)
            self._web.pre_shutdown()
            await self._web.shutdown(CLOSE_GRACE_S)
        for listener in self._listeners:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), CLOSE_GRACE_S)
        self._listeners.clear()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != DESCRIPTOR_PATH:
            return web.Response(status=404, text="not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="GET only\n")
        key = self._route(request)
        if key is None:  # the connection went away, or its listener was closed meanwhile
            return web.Response(status=404, text="not found\n")
        if request.method == "GET":
            self.requests[key] += 1
        return web.Response(body=self._bodies[key], headers=_JSON_HEADERS)

    def _route(self, request: web.BaseRequest) -> tuple[str, int] | None:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if not sockname:
            return None
        return self._routes.get((sockname[0], sockname[1]))

"""The node descriptor (PROTOCOL.md sections 1-2): parse and validate every field and limit.

A document that is not JSON, breaks a limit or lacks a required field fails the whole host
(``InvalidDescriptor`` with a reason). A service entry that breaks a rule is skipped with its
reason; the node's valid services still count. Unknown keys are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ronin.discovery.probe_failure import ProbeFailure
from ronin.kos import CANONICAL_CLASSES as CANONICAL_CLASSES

DESCRIPTOR_PATH = "/.well-known/kos-node"
#: A descriptor path a TXT record gives (PROTOCOL.md section 3) is used only if it is this short
#: and made of RFC 3986 path characters: no "//" start (that would name another host), no "?",
#: "#", spaces, backslashes or controls, "%" only as an escape, and no "." or ".." segment.
MAX_PATH_CHARS = 255
_SAFE_PATH = re.compile(r"/(?!/)(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*")
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_SERVICES = 256
MAX_PEERS = 1024
MAX_ID_CHARS = 255
MAX_NODE_CLASS_CHARS = 100
MAX_ENDPOINT_CHARS = 2048
MAX_CAPABILITIES = 128
MAX_CAPABILITY_CHARS = 128
MAX_PROTOCOLS = 32
MAX_PROTOCOL_CHARS = 64
ENDPOINT_SCHEMES = frozenset({"http", "https", "ws", "wss"})
PEER_SCHEMES = frozenset({"http", "https"})

DID = re.compile(r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$")
CAPABILITY = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
CODEX_HASH = re.compile(r"^[0-9a-fA-F]{64}$")


def base_url(host: str, port: int) -> str:
    """``http://host:port``: an IPv6 address in brackets, its zone (fe80::1%eth0) escaped as
    ``%25`` (RFC 6874)."""
    if ":" in host and not host.startswith("["):
        host = "[" + host.replace("%", "%25") + "]"
    return f"http://{host}:{port}"


def safe_path(path: str | None) -> str:
    """``path`` if it is a safe absolute path on the node's own server, else the usual one."""
    if (
        path
        and len(path) <= MAX_PATH_CHARS
        and _SAFE_PATH.fullmatch(path)
        and not any(segment in (".", "..") for segment in path.split("/"))
    ):
        return path
    return DESCRIPTOR_PATH


class InvalidDescriptor(ProbeFailure):
    """The document fails the host: ``reason`` is the short name counted in job results."""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One valid service of a descriptor."""

    service_id: str
    endpoint: str
    capabilities: tuple[str, ...]
    protocols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeDescriptor:
    """A validated descriptor: what enters the map, and what was left out and why."""

    kos: str
    node_id: str
    node_class: str
    services: tuple[ServiceEntry, ...]
    peers: tuple[str, ...]
    hieros_compliance: dict[str, Any] | None
    skipped: tuple[tuple[str, str], ...] = field(default=())
    """(what, reason) for each service entry or peer left out: ("services[3]", "bad_endpoint")."""


def parse_descriptor(body: bytes) -> NodeDescriptor:
    """Validate a descriptor document; ``InvalidDescriptor`` when it fails the host."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidDescriptor("too_large", f"document over {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidDescriptor("invalid_json", f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise InvalidDescriptor("invalid_descriptor", "the document is not a JSON object")
    for key in ("kos", "node_id", "node_class", "services"):
        if key not in document:
            raise InvalidDescriptor("invalid_descriptor", f"required field {key!r} is missing")
    kos = document["kos"]
    if not isinstance(kos, str) or not re.fullmatch(r"1\.\d{1,3}", kos):
        raise InvalidDescriptor("invalid_descriptor", "kos must be a 1.x version string")
    node_id = _did(document["node_id"], "node_id")
    node_class = document["node_class"]
    if not (
        isinstance(node_class, str)
        and 1 <= len(node_class) <= MAX_NODE_CLASS_CHARS
        and node_class.isprintable()
    ):
        raise InvalidDescriptor(
            "invalid_descriptor", f"node_class must be 1 to {MAX_NODE_CLASS_CHARS} printable chars"
        )
    services, peers = document["services"], document.get("peers", [])
    if not isinstance(services, list):
        raise InvalidDescriptor("invalid_descriptor", "services must be a list")
    if len(services) > MAX_SERVICES:
        raise InvalidDescriptor("too_many_services", f"more than {MAX_SERVICES} services")
    if not isinstance(peers, list):
        raise InvalidDescriptor("invalid_descriptor", "peers must be a list")
    if len(peers) > MAX_PEERS:
        raise InvalidDescriptor("too_many_peers", f"more than {MAX_PEERS} peers")
    skipped: list[tuple[str, str]] = []
    return NodeDescriptor(
        kos=kos,
        node_id=node_id,
        node_class=node_class,
        services=_services(services, skipped),
        peers=_peers(peers, skipped),
        hieros_compliance=_hieros(document.get("hieros_compliance"), skipped),
        skipped=tuple(skipped),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _did(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or not DID.match(value):
        raise InvalidDescriptor("invalid_descriptor", f"{name} must be a DID of at most 255 chars")
    return value


def _services(entries: list[Any], skipped: list[tuple[str, str]]) -> tuple[ServiceEntry, ...]:
    services: dict[str, ServiceEntry] = {}
    for index, entry in enumerate(entries):
        try:
            service = _service(entry)
        except _Skip as skip:
            skipped.append((f"services[{index}]", skip.reason))
            continue
        if service.service_id in services:
            skipped.append((f"services[{index}]", "duplicate_service_id"))
            continue
        services[service.service_id] = service
    return tuple(services.values())


class _Skip(Exception):
    """A service entry that breaks a rule; ``reason`` names the rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _service(entry: Any) -> ServiceEntry:
    """One service entry; ``_Skip`` naming the rule it breaks."""
    if not isinstance(entry, dict):
        raise _Skip("not_an_object")
    service_id = entry.get("service_id")
    if (
        not isinstance(service_id, str)
        or len(service_id) > MAX_ID_CHARS
        or not DID.match(service_id)
    ):
        raise _Skip("bad_service_id")
    endpoint = entry.get("endpoint")
    if not isinstance(endpoint, str) or not _is_url(endpoint, ENDPOINT_SCHEMES):
        raise _Skip("bad_endpoint")
    capabilities = entry.get("capabilities", [])
    if not isinstance(capabilities, list) or len(capabilities) > MAX_CAPABILITIES:
        raise _Skip("bad_capabilities")
    if not all(isinstance(c, str) and CAPABILITY.match(c) for c in capabilities):
        raise _Skip("bad_capability")
    if len(set(capabilities)) != len(capabilities):
        raise _Skip("duplicate_capability")
    protocols = entry.get("protocols", [])
    if not (
        isinstance(protocols, list)
        and len(protocols) <= MAX_PROTOCOLS
        and all(
            isinstance(p, str) and 1 <= len(p) <= MAX_PROTOCOL_CHARS and p.isprintable()
            for p in protocols
        )
    ):
        raise _Skip("bad_protocols")
    return ServiceEntry(service_id, endpoint, tuple(capabilities), tuple(protocols))


def _peers(entries: list[Any], skipped: list[tuple[str, str]]) -> tuple[str, ...]:
    peers: dict[str, None] = {}
    for index, peer in enumerate(entries):
        if isinstance(peer, str) and (
            _is_url(peer, PEER_SCHEMES) or (len(peer) <= MAX_ID_CHARS and DID.match(peer))
        ):
            peers[peer] = None
        else:
            skipped.append((f"peers[{index}]", "bad_peer"))
    return tuple(peers)


def _hieros(value: Any, skipped: list[tuple[str, str]]) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("verified"), bool)
        and isinstance(value.get("codex_hash"), str)
        and CODEX_HASH.match(value["codex_hash"])
    ):
        return {"verified": value["verified"], "codex_hash": value["codex_hash"].lower()}
    skipped.append(("hieros_compliance", "bad_hieros_compliance"))
    return None


def _is_url(value: str, schemes: frozenset[str]) -> bool:
    if not 1 <= len(value) <= MAX_ENDPOINT_CHARS or not value.isprintable() or " " in value:
        return False
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and (port is None or port > 0)

"""Discovery job parameters (PROTOCOL.md section 5), validated before anything is written."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ronin.discovery.param_fields import (
    CONCURRENCY,
    DEFAULT_DEPTH,
    DEFAULT_MDNS_WINDOW_S,
    DEPTH,
    FIELDS,
    MDNS_WINDOW,
    PORTS,
    PROTOCOLS_FIELD,
    RATE,
)
from ronin.discovery.param_fields import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from ronin.discovery.param_fields import DEFAULT_PROTOCOLS as DEFAULT_PROTOCOLS
from ronin.discovery.param_fields import DEFAULT_RATE as DEFAULT_RATE
from ronin.discovery.param_fields import KOS_PORT as KOS_PORT
from ronin.errors import InvalidTarget, UnstorableValue
from ronin.store.storable import check_json

TargetType = Literal["network_cidr", "domain", "did"]
TARGET_TYPES: tuple[TargetType, ...] = ("network_cidr", "domain", "did")
MAX_TARGET_CHARS = 255
# Every other key is described once, with its bounds and default, in param_fields.FIELDS.
KNOWN_KEYS = frozenset({"target", *(field.name for field in FIELDS)})

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DIGITS_AND_DOTS = re.compile(r"^[0-9.]+$")
# host:port where the host is a name or an IPv4 address (an IPv6 address has two colons).
_HOST_AND_PORT = re.compile(r"^[A-Za-z0-9.-]+:[0-9]+$")
_DID = re.compile(r"^did:([a-z0-9]+):([A-Za-z0-9._:%-]+)$")
_TARGET_KEYS = frozenset({"type", "value"})
# An IPv4 address or network as ipaddress writes one (four decimal octets without leading
# zeros, a prefix length without one): parsed by a shortcut, 2.3 -> 1.0 us a submission.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}(?:/(?:3[0-2]|[12]?[0-9]))?")


@dataclass(frozen=True, slots=True)
class JobParams:
    """A valid job's parameters, normalised; the submitted JSON is stored verbatim beside."""

    target_type: TargetType
    target: str
    protocols: tuple[str, ...]
    depth: int
    ports: tuple[int, ...]
    concurrency: int | None = None
    rate: float | None = None
    mdns_window_s: float = DEFAULT_MDNS_WINDOW_S
    #: A ``network_cidr`` target as parsed (``target`` is its text), so nothing parses it
    #: again; None for a domain or a DID.
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def __post_init__(self) -> None:
        if (self.network is not None) != (self.target_type == "network_cidr"):
            raise ValueError("a network target, and only one, has its parsed network")


def parse_params(params: Any) -> JobParams:
    """Validate ``params``; ``InvalidTarget`` naming the field at the first rule broken."""
    if not isinstance(params, Mapping):
        raise InvalidTarget("params must be a JSON object", field="params")
    if not params.keys() <= KNOWN_KEYS:
        unknown = sorted(str(key) for key in params if key not in KNOWN_KEYS)
        raise InvalidTarget(f"unknown parameter {unknown[0]!r}", field=unknown[0])
    try:
        check_json(params, "params")
    except UnstorableValue as exc:
        raise InvalidTarget(exc.message, field=exc.field) from None
    target_type, target, network = _target(params.get("target"))
    return JobParams(
        target_type=target_type,
        target=target,
        network=network,
        protocols=_protocols(params.get("protocols", list(DEFAULT_PROTOCOLS))),
        depth=_depth(params.get("depth", DEFAULT_DEPTH)),
        ports=_ports(params.get("ports", [KOS_PORT])),
        concurrency=CONCURRENCY.check(params.get("concurrency")),
        rate=RATE.check(params.get("rate")),
        mdns_window_s=MDNS_WINDOW.check(params.get("mdns_window_s", DEFAULT_MDNS_WINDOW_S)),
    )


def with_defaults(params: Any) -> Any:
    """``params`` with the default protocols written in, so a stored job says what it probes.

    Anything but a JSON object is returned as it is, for ``parse_params`` to refuse.
    """
    if isinstance(params, Mapping) and "protocols" not in params:
        return {**params, "protocols": list(DEFAULT_PROTOCOLS)}
    return params


def json_schema() -> dict[str, Any]:
    """The JSON Schema of job params, from the description the rules use (for OpenAPI);
    ``parse_params`` stays the authority and names the field at fault."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["target"],
        "additionalProperties": False,
        "properties": {
            "target": {
                "type": "object",
                "required": ["type", "value"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "enum": list(TARGET_TYPES)},
                    "value": {"type": "string", "minLength": 1, "maxLength": MAX_TARGET_CHARS},
                },
            },
            **{field.name: field.schema() for field in FIELDS},
        },
    }
    assert set(schema["properties"]) == KNOWN_KEYS
    return schema


def _target(
    target: Any,
) -> tuple[TargetType, str, ipaddress.IPv4Network | ipaddress.IPv6Network | None]:
    if not isinstance(target, Mapping):
        raise InvalidTarget("target must be an object with type and value", field="target")
    if not target.keys() <= _TARGET_KEYS:
        extra = sorted(str(key) for key in target if key not in _TARGET_KEYS)
        raise InvalidTarget(f"unknown target key {extra[0]!r}", field=f"target.{extra[0]}")
    kind, value = target.get("type"), target.get("value")
    if kind not in TARGET_TYPES:
        raise InvalidTarget(
            f"target.type must be one of {', '.join(TARGET_TYPES)}, not {kind!r}",
            field="target.type",
        )
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TARGET_CHARS:
        raise InvalidTarget(
            f"target.value must be a string of 1 to {MAX_TARGET_CHARS} characters",
            field="target.value",
        )
    if kind == "network_cidr":
        network, text = _network_and_text(value)
        return kind, text, network
    if kind == "domain":
        return kind, parse_domain(value, field="target.value"), None
    return kind, parse_did(value), None


def target_from_text(text: str) -> tuple[TargetType, str]:
    """The target an operator typed: a DID, a network or address, or a domain name.

    Text that could only be an address or a network (digits and dots, or any colon or slash)
    is one, or is refused naming what is wrong; it never falls through to a domain lookup.
    """
    value = text.strip()
    if value.startswith("did:"):
        return "did", parse_did(value)
    if _HOST_AND_PORT.match(value):
        raise InvalidTarget(
            f"target {value!r} names a port: give the host alone and the ports apart (--port)",
            field="target.value",
        )
    if _looks_like_network(value):
        parse_network(value)
        return "network_cidr", value
    parse_domain(value, field="target.value")
    return "domain", value


def _looks_like_network(value: str) -> bool:
    """Colons and slashes are never in a domain name, and nor are only digits and dots."""
    return any(char in value for char in ":/") or bool(_DIGITS_AND_DOTS.match(value))


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4 or IPv6 network; a bare address is a network of one."""
    return _network_and_text(value)[0]


def _network_and_text(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]:
    """``parse_network`` and the network as ``str`` writes it."""
    text = value.strip()
    if _CANONICAL_IPV4.fullmatch(text):
        address, slash, prefix = text.partition("/")
        with contextlib.suppress(ValueError):  # host bits set: refused below, with a hint
            canonical = ipaddress.IPv4Network(
                (int.from_bytes(socket.inet_aton(address)), int(prefix) if slash else 32)
            )
            return canonical, text if slash else f"{text}/32"
    network = _parsed_network(value)
    return network, str(network)


def _parsed_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``value`` parsed by ipaddress, or refused saying why."""
    text = value.strip()
    ipv6 = ":" in text
    family: type[ipaddress.IPv4Network | ipaddress.IPv6Network] = (
        ipaddress.IPv6Network if ipv6 else ipaddress.IPv4Network
    )
    try:
        return family(text, strict=True)
    except ValueError as exc:
        reason = _prefix_problem(text, ipv6=ipv6) or str(exc)
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {family(text, strict=False)}?"
        raise InvalidTarget(
            f"target.value {value!r} is not a network in CIDR form ({reason}){hint}",
            field="target.value",
        ) from None


def _prefix_problem(text: str, *, ipv6: bool) -> str | None:
    """A prefix length out of range, said as such (ipaddress says only "not a valid netmask")."""
    most = ipaddress.IPV6LENGTH if ipv6 else ipaddress.IPV4LENGTH
    _, slash, prefix = text.partition("/")
    if not slash:
        return None
    if not prefix.isdecimal():
        return f"prefix length {prefix!r} is not a number from 0 to {most}"
    if int(prefix) > most:
        version = "IPv6" if ipv6 else "IPv4"
        return f"prefix length {int(prefix)} > {most}, the most an {version} network has"
    return None


def parse_domain(value: str, *, field: str, allow_localhost: bool = False) -> str:
    """A DNS name of two labels or more (RFC 1123), lower-cased, without a trailing dot;
    never an address. ``allow_localhost``: the one-label name ``localhost`` too."""
    name = value.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise InvalidTarget(f"{field} {value!r} is an address, not a domain name", field=field)
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidTarget(f"{field} {value!r} is not a valid domain name", field=field) from None
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidTarget(f"{field} {value!r} is not a valid domain name", field=field)
    if len(labels) == 1 and not (allow_localhost and name == "localhost"):
        raise InvalidTarget(
            f"{field} {value!r} is a single word, not a domain name (one has a dot: "
            "example.org), an address or a network",
            field=field,
        )
    if labels[-1].isdigit():
        raise InvalidTarget(f"{field} {value!r} has a numeric top-level label", field=field)
    return name


def parse_did(value: str) -> str:
    """A ``did:web`` (whose host is a domain name, never an address) or ``did:kos`` DID."""
    match = _DID.match(value)
    if match is None:
        raise InvalidTarget(
            f"target.value {value!r} is not a DID (did:<method>:<id>)", field="target.value"
        )
    method, identifier = match.groups()
    if method == "web":
        # did:web:<host>[%3A<port>][:<path>...]; the host is a domain name, never an address.
        host, _, port = identifier.split(":", 1)[0].replace("%3a", "%3A").partition("%3A")
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidTarget(f"did:web port {port!r} is not a port", field="target.value")
        # localhost (RFC 6761) is the one single-label host: it always means this machine.
        parse_domain(host, field="target.value", allow_localhost=True)
    elif method != "kos":
        raise InvalidTarget(
            f"DID method {method!r} cannot be resolved: Ronin resolves did:web and did:kos",
            field="target.value",
        )
    return value


def _protocols(value: Any) -> tuple[str, ...]:
    return tuple(PROTOCOLS_FIELD.check(value))


def _depth(value: Any) -> int:
    return int(DEPTH.check(value))


def _ports(value: Any) -> tuple[int, ...]:
    return tuple(PORTS.check(value))

"""Job parameters follow PROTOCOL.md section 5; anything else is INVALID_TARGET naming the field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ronin.discovery.params import KNOWN_KEYS, KOS_PORT, json_schema, parse_params, with_defaults
from ronin.errors import InvalidTarget


def params(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": {"type": "network_cidr", "value": "192.168.1.0/24"},
        "protocols": ["mdns", "http-api"],
        "depth": 1,
        "ports": [30437],
    }
    return base | overrides


def target(kind: str, value: Any) -> dict[str, Any]:
    return params(target={"type": kind, "value": value})


@pytest.mark.parametrize(
    "valid",
    [
        params(),
        target("network_cidr", "fd00:1234::/112"),
        target("network_cidr", "10.0.0.5"),
        target("domain", "Example.ORG."),
        target("domain", "kos.internal"),
        target("did", "did:web:example.org"),
        target("did", "did:web:example.org%3A8443:nodes:griot"),
        target("did", "did:kos:tohunga:51be02"),
        target("did", "did:web:localhost%3A8443"),  # RFC 6761: the one single-label host
        params(depth=8, ports=[1, 65535]),
        params(concurrency=4096, rate=0.5),
        params(mdns_window_s=1),
        params(mdns_window_s=59.5),
    ],
)
def test_valid_params(valid: dict[str, Any]) -> None:
    parse_params(valid)


def test_defaults_and_normalisation() -> None:
    parsed = parse_params(
        {"target": {"type": "domain", "value": "Example.ORG."}, "protocols": ["dns-sd"]}
    )
    assert (parsed.target, parsed.depth, parsed.ports) == ("example.org", 1, (KOS_PORT,))
    assert parsed.mdns_window_s == 3


def test_a_network_target_is_parsed_once_and_carried_parsed() -> None:
    assert parse_params(params()).network == ipaddress.IPv4Network("192.168.1.0/24")
    assert parse_params(target("network_cidr", "10.0.0.5")).network == ipaddress.IPv4Network(
        "10.0.0.5/32"
    )
    assert parse_params(target("network_cidr", "fd00:1234::/112")).network == (
        ipaddress.IPv6Network("fd00:1234::/112")
    )
    assert parse_params(target("domain", "kos.internal")).network is None
    assert parse_params(target("did", "did:kos:tohunga:51be02")).network is None


def test_protocols_default_to_http_api_and_are_written_in() -> None:
    bare = {"target": {"type": "network_cidr", "value": "10.0.0.0/24"}}
    assert parse_params(bare).protocols == ("http-api",)
    assert with_defaults(bare) == bare | {"protocols": ["http-api"]}
    chosen = bare | {"protocols": ["mdns"]}
    assert with_defaults(chosen) == chosen
    assert with_defaults([1]) == [1]  # for parse_params to refuse


def test_the_openapi_schema_knows_every_parameter_and_requires_only_the_target() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == KNOWN_KEYS
    assert schema["required"] == ["target"]
    assert schema["properties"]["protocols"]["default"] == ["http-api"]


@pytest.mark.parametrize(
    ("invalid", "field", "message"),
    [
        ([], "params", "JSON object"),
        (params(extra=1), "extra", "unknown parameter"),
        (params(target="10.0.0.0/8"), "target", "object"),
        (target("ldap", "x"), "target.type", "must be one of"),
        (target("network_cidr", "192.168.1.5/24"), "target.value", "did you mean 192.168.1.0/24"),
        (target("network_cidr", "192.168.1.0/33"), "target.value", "prefix length 33 > 32"),
        (target("network_cidr", "192.168.1.300/24"), "target.value", "Octet 300"),
        (target("network_cidr", 42), "target.value", "string"),
        (target("domain", "-bad-.org"), "target.value", "not a valid domain"),
        (target("domain", "10.0.0.5"), "target.value", "address"),
        (target("domain", "intranet"), "target.value", "single word"),
        (target("domain", "localhost"), "target.value", "single word"),
        (target("did", "did:web:intranet"), "target.value", "single word"),
        (target("domain", "a" * 64 + ".org"), "target.value", "not a valid domain"),
        (target("did", "did:web:10.0.0.5"), "target.value", "address"),
        (target("did", "did:web:example.org%3A99999"), "target.value", "port"),
        (target("did", "did:example:123"), "target.value", "cannot be resolved"),
        (target("did", "not-a-did"), "target.value", "not a DID"),
        (target("did", "did:kos:a\x00b"), "params.target.value", "NUL"),
        (params(protocols=[]), "protocols", "non-empty"),
        (params(protocols=["gopher"]), "protocols", "unknown protocol"),
        (params(protocols=["mdns", "mdns"]), "protocols", "twice"),
        (params(depth=0), "depth", "1 to 8"),
        (params(depth=9), "depth", "1 to 8"),
        (params(depth=True), "depth", "1 to 8"),
        (params(depth=1.5), "depth", "1 to 8"),
        (params(ports=[]), "ports", "1 to 64"),
        (params(ports=[0]), "ports", "from 1 to 65535"),
        (params(ports=["80"]), "ports", "from 1 to 65535"),
        (params(ports=[80, 80]), "ports", "twice"),
        (params(concurrency=0), "concurrency", "from 1 to 4096"),
        (params(concurrency=2.5), "concurrency", "from 1 to 4096"),
        (params(rate=-1), "rate", "from 0"),
        (params(rate="fast"), "rate", "from 0"),
        (params(mdns_window_s=0.5), "mdns_window_s", "from 1 to 60"),
        (params(mdns_window_s=3600), "mdns_window_s", "from 1 to 60"),
        (params(mdns_window_s="3s"), "mdns_window_s", "from 1 to 60"),
    ],
)
def test_invalid_params_name_their_field(invalid: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidTarget, match=message) as raised:
        parse_params(invalid)
    assert raised.value.code == "INVALID_TARGET"
    assert raised.value.field == field


def _as_ipaddress_says(text: str) -> tuple[str, str]:
    """What parsing ``text`` by ipaddress alone gives: the network's text, or the refusal."""
    try:
        return "ok", str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError:
        return "refused", ""


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1/32",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "10.0.0.0/8",
        "10.0.0.1/8",  # host bits set
        "01.2.3.4",  # a leading zero
        "1.2.3.4/032",  # ipaddress takes a leading zero in the prefix
        " 10.0.0.0/24 ",
        "10.0.0.0/33",
        "1.2.3",
        "256.1.1.1",
        "10.0.0.0/255.0.0.0",  # a netmask
        "::1",
        "2001:db8::/32",
    ],
)
def test_a_network_target_reads_as_ipaddress_reads_it(text: str) -> None:
    """The shortcut for canonical IPv4 text changes no verdict and no normalised target."""
    target = {"target": {"type": "network_cidr", "value": text}}
    try:
        parsed = parse_params(target)
    except InvalidTarget:
        got = ("refused", "")
    else:
        got = ("ok", parsed.target)
        assert str(parsed.network) == parsed.target
    assert got == _as_ipaddress_says(text)

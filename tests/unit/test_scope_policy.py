"""The scope policy (PROTOCOL.md section 6) refuses what it must, whatever a job says."""

from __future__ import annotations

import ipaddress

import pytest

from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.errors import ForbiddenTarget, InvalidValue

DEFAULT = ScopePolicy.default()


def policy(allow: str, **limits: int) -> ScopePolicy:
    return ScopePolicy(parse_networks(allow, field="RONIN_ALLOW"), **limits)


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.31.255.1",
        "192.168.1.20",
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "fd12:3456::1",
        "::ffff:192.168.1.5",
    ],
)
def test_the_default_allows_private_loopback_and_ula(address: str) -> None:
    assert DEFAULT.allows(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.251",
        "255.255.255.255",
        "2001:db8::1",
        "ff02::fb",
        "fe80::1",
        "::ffff:8.8.8.8",
        "not an address",
    ],
)
def test_the_default_refuses_public_and_special_addresses(address: str) -> None:
    assert not DEFAULT.allows(address)


def test_refused_ranges_need_naming_explicitly() -> None:
    everything = policy("0.0.0.0/0")
    assert everything.allows("8.8.8.8")
    assert not everything.allows("169.254.169.254")
    assert not everything.allows("224.0.0.251")
    named = policy("0.0.0.0/0,169.254.169.0/24")
    assert named.allows("169.254.169.254")
    assert not named.allows("169.254.1.1")


@pytest.mark.parametrize("target", ["192.168.1.0/24", "10.20.0.0/16", "127.0.0.1/32", "fd00::/112"])
def test_targets_inside_the_policy_pass(target: str) -> None:
    DEFAULT.check_target(ipaddress.ip_network(target))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("8.8.8.0/24", "outside the networks"),
        ("10.0.0.0/8", r"larger than the largest target allowed \(a /16\)"),
        ("fd00::/64", "a /112"),
        ("192.168.0.0/15", "larger"),
        ("169.254.169.0/24", "outside"),
    ],
)
def test_targets_outside_the_policy_are_forbidden(target: str, message: str) -> None:
    with pytest.raises(ForbiddenTarget, match=message) as raised:
        DEFAULT.check_target(ipaddress.ip_network(target))
    assert raised.value.code == "FORBIDDEN_TARGET"


def test_the_size_limit_is_configurable() -> None:
    policy("10.0.0.0/8", max_prefix_v4=8).check_target(ipaddress.ip_network("10.0.0.0/8"))


def test_a_bad_allow_list_is_named() -> None:
    with pytest.raises(InvalidValue, match="RONIN_ALLOW: 'nonsense'"):
        parse_networks("10.0.0.0/8, nonsense", field="RONIN_ALLOW")


def _reference_covers(
    allowed: tuple[ipaddress.IPv4Network, ...], network: ipaddress.IPv4Network
) -> bool:
    """The rule as ``ipaddress`` says it: what the integer spans must agree with."""
    refused = [ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4")]
    refused.append(ipaddress.IPv4Network("255.255.255.255/32"))
    granting = [a for a in allowed if network.subnet_of(a)]
    return bool(granting) and all(
        any(a.subnet_of(r) for a in granting) for r in refused if network.overlaps(r)
    )


def test_the_integer_checks_agree_with_ipaddress_on_random_networks() -> None:
    import random

    rng = random.Random(20261204)
    allowed = (
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv4Network("169.254.169.0/24"),  # inside an always-refused range, named
        ipaddress.IPv4Network("224.0.0.0/3"),  # holds a refused range without naming it
        ipaddress.IPv4Network("192.168.7.0/24"),
        ipaddress.IPv4Network("0.0.0.0/0"),
    )
    seen = set()
    for _ in range(3000):
        chosen = tuple(a for a in allowed if rng.random() < 0.5)
        prefix = rng.randint(0, 32)
        base = rng.choice([0x0A000000, 0xA9FEA900, 0xE0000000, 0xC0A80700, 0, 0xFFFFFFFF])
        address = (base ^ rng.getrandbits(rng.randint(0, 32))) & 0xFFFFFFFF
        network = ipaddress.IPv4Network((address, prefix), strict=False)
        subject = ScopePolicy(chosen, max_prefix_v4=0)
        expected = _reference_covers(chosen, network)
        seen.add(expected)
        assert subject._covers(4, int(network.network_address), int(network.broadcast_address)) == (
            expected
        ), (chosen, network)
    assert seen == {True, False}

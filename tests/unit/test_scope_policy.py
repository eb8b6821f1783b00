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

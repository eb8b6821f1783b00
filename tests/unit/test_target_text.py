"""A target as an operator types it: a DID, a network or address, or a domain name; text that
looks like an address and does not parse is refused naming what is wrong, never a domain."""

from __future__ import annotations

import pytest

from ronin.discovery.params import parse_params, target_from_text
from ronin.errors import InvalidTarget


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("192.168.1.0/24", "network_cidr", "192.168.1.0/24"),
        ("10.0.0.5", "network_cidr", "10.0.0.5"),
        (" 127.7.0.0/29 ", "network_cidr", "127.7.0.0/29"),
        ("fd00:1234::/112", "network_cidr", "fd00:1234::/112"),
        ("::1", "network_cidr", "::1"),
        ("example.org", "domain", "example.org"),
        ("cafe.be", "domain", "cafe.be"),  # only hex letters, still a name
        ("Kos.Internal.", "domain", "Kos.Internal."),
        ("did:web:example.org", "did", "did:web:example.org"),
        ("did:kos:tohunga:51be02", "did", "did:kos:tohunga:51be02"),
    ],
)
def test_a_target_is_recognised(text: str, kind: str, value: str) -> None:
    assert target_from_text(text) == (kind, value)
    parse_params({"target": {"type": kind, "value": value}})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not-a-cidr", "single word, not a domain name"),
        ("localhost", "single word"),
        ("127.7.0.0/33", "prefix length 33 > 32"),
        ("fd00::/129", "prefix length 129 > 128"),
        ("10.0.0.0/x", "prefix length 'x' is not a number from 0 to 32"),
        ("10.0.0.0/", "prefix length '' is not a number"),
        ("127.7.0.300/24", "Octet 300 \\(> 255\\)"),
        ("127.7.0.300", "Octet 300 \\(> 255\\)"),
        ("10.1.2", "Expected 4 octets"),
        ("10.1.2.3.4", "Expected 4 octets"),
        ("10..2.3", "Empty octet"),
        ("12", "Expected 4 octets"),
        ("10.0.0.1/24", "host bits set\\); did you mean 10.0.0.0/24"),
        ("fe80::g", "Only hex digits"),
        ("1::2::3", "At most one '::'"),
        ("example.org/24", "not a network in CIDR form"),
        ("example.org:30437", "names a port"),
        ("-bad-.org", "not a valid domain name"),
        ("did:web:example", "single word"),
        ("did:ldap:x", "cannot be resolved"),
    ],
)
def test_a_mistyped_target_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidTarget, match=reason) as raised:
        target_from_text(text)
    assert raised.value.code == "INVALID_TARGET"
    assert raised.value.field == "target.value"

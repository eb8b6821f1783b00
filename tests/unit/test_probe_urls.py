"""A URL's host is read one way for the scope check and the connection: every spelling that the
HTTP client would rewrite into another host is refused with its reason (issue 10)."""

from __future__ import annotations

import ipaddress

import pytest

from ronin.discovery.hosts import UnsafeUrl, parse_probe_url
from ronin.discovery.policy import ScopePolicy, parse_networks

# Every way to write 127.65.0.1:8080 that some client or resolver still reads as that address,
# and the reason Ronin refuses it.
HOSTILE_SPELLINGS = {
    "fullwidth digits": (
        "http://\uff11\uff12\uff17.\uff16\uff15.\uff10.\uff11:8080/",
        "non_canonical_host",
    ),
    "ideographic dots": ("http://127\u300265\u30020\u30021:8080/", "non_canonical_host"),
    "fullwidth dots": ("http://127\uff0e65\uff0e0\uff0e1:8080/", "non_canonical_host"),
    "a trailing dot": ("http://127.65.0.1.:8080/", "non_canonical_address"),
    "decimal": ("http://2134966273:8080/", "non_canonical_address"),
    "hex": ("http://0x7f.0x41.0.1:8080/", "non_canonical_address"),
    "one hex number": ("http://0x7f410001:8080/", "non_canonical_address"),
    "octal": ("http://0177.0101.0.1:8080/", "non_canonical_address"),
    "leading zeros": ("http://127.065.000.001:8080/", "non_canonical_address"),
    "the short form": ("http://127.65.1:8080/", "non_canonical_address"),
    "a numeric last label": ("http://node.example.1:8080/", "non_canonical_address"),
    "percent-encoding": ("http://%31%32%37.65.0.1:8080/", "non_canonical_host"),
    "userinfo": ("http://127.77.9.2@127.65.0.1:8080/", "userinfo"),
    "userinfo and a backslash": ("http://127.77.9.2\\@127.65.0.1:8080/", "userinfo"),
    "a backslash": ("http://127.65.0.1:8080\\.127.77.9.2/", "non_canonical_host"),
    "a zone id": ("http://[fe80::1%25lo]:8080/", "zone_id"),
    "an IDNA mapping": ("http://\u24dbocalhost:8080/", "non_canonical_host"),
    "a Unicode name": ("http://b\u00fccher.example/", "non_canonical_host"),
    "not http": ("file:///etc/passwd", "bad_url"),
    "an empty label": ("http://node..example/", "bad_url"),
    "a bad port": ("http://127.65.0.1:99999/", "bad_url"),
}


@pytest.mark.parametrize(("url", "reason"), HOSTILE_SPELLINGS.values(), ids=list(HOSTILE_SPELLINGS))
def test_a_host_the_client_would_rewrite_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        parse_probe_url(url)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("url", "host", "port", "address"),
    [
        ("http://127.77.9.2:30437/x", "127.77.9.2", 30437, "127.77.9.2"),
        ("https://[::1]/", "::1", 443, "::1"),
        ("http://[::FFFF:127.65.0.1]:80/", "::ffff:7f41:1", 80, "::ffff:7f41:1"),
        ("http://Node.Example.org:8080", "node.example.org", 8080, None),
        ("http://node.example.org./", "node.example.org.", 80, None),
        ("http://xn--bcher-kva.example/", "xn--bcher-kva.example", 80, None),
        ("http://localhost", "localhost", 80, None),
    ],
)
def test_a_canonical_url_is_read_as_written(
    url: str, host: str, port: int, address: str | None
) -> None:
    read = parse_probe_url(url)
    assert (read.host, read.port) == (host, port)
    assert read.address == (ipaddress.ip_address(address) if address else None)


def test_the_origin_is_one_spelling_per_node() -> None:
    assert parse_probe_url("HTTP://[0:0::1]:80/a").origin == "http://[::1]:80"
    assert parse_probe_url("https://Node.example/").origin == "https://node.example:443"


def test_ipv4_mapped_and_nat64_addresses_are_judged_by_the_ipv4_host_they_reach() -> None:
    policy = ScopePolicy(parse_networks("127.77.0.0/16", field="RONIN_ALLOW"))
    assert policy.allows("::ffff:127.77.0.1")
    assert not policy.allows("::ffff:127.65.0.1")
    assert not policy.allows("64:ff9b::7f41:1")
    # Through a NAT64 gateway, both the gateway's prefix and the IPv4 host must be allowed.
    assert not policy.allows("64:ff9b::7f4d:902")
    with_nat64 = ScopePolicy(parse_networks("127.77.0.0/16,64:ff9b::/96", field="RONIN_ALLOW"))
    assert with_nat64.allows("64:ff9b::7f4d:902")
    assert not with_nat64.allows("64:ff9b::7f41:1")

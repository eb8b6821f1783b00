"""DNS-SD for a domain target, against a real DNS server on loopback (tests/support/dns_server).

Every resolver here asks only that server, with a short lifetime, so a misbehaving name costs
a fraction of a second; the one timing assertion checks the resolver's bound, generously.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator

import dns.asyncresolver
import dns.nameserver
import pytest

from ronin.discovery.dns_sd import (
    DEFAULT_TIMEOUT_S,
    LIFETIME_GRACE_S,
    MAX_ADDRESSES,
    MAX_TARGETS,
    DomainRecords,
    SrvTarget,
    descriptor_path,
    descriptor_urls,
    lookup,
    new_resolver,
    parse_nameserver,
)
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.errors import InvalidValue
from tests.support.dns_server import DnsServer, Zone

LIFETIME_S = 0.4
SERVICE = "_kos._tcp.kos.test"
LOOPBACK_ONLY = ScopePolicy(parse_networks("127.0.0.0/8,::1/128", field="RONIN_ALLOW"))

ZONE: Zone = {
    (SERVICE, "SRV"): ["10 5 30437 node1.kos.test.", "20 0 30438 node2.kos.test."],
    (SERVICE, "TXT"): [
        '"txtvers=1" "node_id=did:kos:griot:7f3a9c" "node_class=Griot"',
        '"path=/kos/descriptor.json"',
    ],
    ("node1.kos.test", "A"): ["127.53.0.1"],
    ("node2.kos.test", "AAAA"): ["::1"],
    ("node2.kos.test", "A"): ["127.53.0.2"],
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONE) as running:
        yield running


def resolver_for(server: DnsServer) -> dns.asyncresolver.Resolver:
    return new_resolver(server.address, timeout_s=LIFETIME_S)


# -- what a domain's records say ---------------------------------------------------------------


async def test_srv_and_txt_give_sorted_targets_their_addresses_and_the_urls(
    server: DnsServer,
) -> None:
    records = await lookup("kos.test", resolver_for(server))
    assert records.targets == (
        SrvTarget("node1.kos.test", 30437, 10, 5, ("127.53.0.1",)),
        SrvTarget("node2.kos.test", 30438, 20, 0, ("127.53.0.2", "::1")),
    )
    assert records.txt == {
        "txtvers": "1",
        "node_id": "did:kos:griot:7f3a9c",
        "node_class": "Griot",
        "path": "/kos/descriptor.json",
    }
    assert records.failures == ()
    urls, refused = descriptor_urls(records, LOOPBACK_ONLY.allows)
    assert urls == [
        "http://127.53.0.1:30437/kos/descriptor.json",
        "http://127.53.0.2:30438/kos/descriptor.json",
        "http://[::1]:30438/kos/descriptor.json",
    ]
    assert refused == []
    # One question each: SRV and TXT at the service, A and AAAA per target; all over UDP.
    assert server.queries == {
        (SERVICE, "SRV"): 1,
        (SERVICE, "TXT"): 1,
        ("node1.kos.test", "A"): 1,
        ("node1.kos.test", "AAAA"): 1,
        ("node2.kos.test", "A"): 1,
        ("node2.kos.test", "AAAA"): 1,
    }
    assert not server.tcp


async def test_same_priority_orders_heavier_first_and_drops_duplicates() -> None:
    zone: Zone = {
        (SERVICE, "SRV"): [
            "5 1 30437 light.kos.test.",
            "5 60 30437 heavy.kos.test.",
            "1 0 30437 first.kos.test.",
            "5 60 30437 HEAVY.kos.test.",
        ],
        ("light.kos.test", "A"): ["127.53.1.1"],
        ("heavy.kos.test", "A"): ["127.53.1.2"],
        ("first.kos.test", "A"): ["127.53.1.3"],
    }
    async with DnsServer(zone) as server:
        records = await lookup("kos.test.", resolver_for(server))
    assert [(t.host, t.priority, t.weight) for t in records.targets] == [
        ("first.kos.test", 1, 0),
        ("heavy.kos.test", 5, 60),
        ("light.kos.test", 5, 1),
    ]
    assert records.txt == {}
    assert records.failures == ()


async def test_an_out_of_scope_address_is_refused_and_reported_never_a_url() -> None:
    zone: Zone = {
        (SERVICE, "SRV"): ["0 0 30437 inside.kos.test.", "0 0 30437 outside.kos.test."],
        ("inside.kos.test", "A"): ["127.53.0.9"],
        ("outside.kos.test", "A"): ["10.9.9.9", "169.254.169.254"],
        ("outside.kos.test", "AAAA"): ["2001:db8::1"],
    }
    async with DnsServer(zone) as server:
        records = await lookup("kos.test", resolver_for(server))
    assert records.targets[1].addresses == ("10.9.9.9", "169.254.169.254", "2001:db8::1")
    urls, refused = descriptor_urls(records, LOOPBACK_ONLY.allows)
    assert urls == ["http://127.53.0.9:30437/.well-known/kos-node"]
    assert refused == ["10.9.9.9", "169.254.169.254", "2001:db8::1"]
    # The default policy allows 10/8, but never the metadata range or a public address.
    assert descriptor_urls(records, ScopePolicy.default().allows)[1] == [
        "169.254.169.254",
        "2001:db8::1",
    ]


async def test_no_dns_sd_here_is_no_target_and_no_failure(server: DnsServer) -> None:
    resolver = resolver_for(server)
    assert await lookup("elsewhere.test", resolver) == DomainRecords()  # NXDOMAIN
    assert server.queries[("_kos._tcp.elsewhere.test", "SRV")] == 1
    # The name exists (it has TXT) but has no SRV: NOERROR without an answer.
    async with DnsServer({(SERVICE, "TXT"): ['"txtvers=1"']}) as txt_only:
        records = await lookup("kos.test", resolver_for(txt_only))
    assert records == DomainRecords(txt={"txtvers": "1"})


async def test_a_target_of_dot_means_no_service_here() -> None:
    async with DnsServer({(SERVICE, "SRV"): ["0 0 0 ."]}) as server:
        records = await lookup("kos.test", resolver_for(server))
    assert records == DomainRecords()
    assert set(server.queries) == {(SERVICE, "SRV"), (SERVICE, "TXT")}  # no address asked


async def test_an_unresolvable_target_is_kept_empty_and_reported() -> None:
    zone: Zone = {
        (SERVICE, "SRV"): ["0 0 30437 ghost.kos.test.", "1 0 30437 node1.kos.test."],
        ("node1.kos.test", "A"): ["127.53.0.1"],
    }
    async with DnsServer(zone) as server:
        records = await lookup("kos.test", resolver_for(server))
    assert records.targets[0] == SrvTarget("ghost.kos.test", 30437, 0, 0, ())
    assert records.targets[1].addresses == ("127.53.0.1",)
    assert records.failures == ("srv_target_unresolvable:ghost.kos.test",)
    assert descriptor_urls(records, LOOPBACK_ONLY.allows)[0] == [
        "http://127.53.0.1:30437/.well-known/kos-node"
    ]


# -- misbehaving servers ----------------------------------------------------------------------


def first_asked(server: DnsServer, name: str, rdtype: str) -> float:
    return min(at for at, key in server.arrivals if key == (name, rdtype))


async def test_a_server_that_never_answers_is_a_timeout_within_the_bound(
    server: DnsServer,
) -> None:
    server.misbehave(SERVICE, "silent")
    started = time.monotonic()
    records = await lookup("kos.test", resolver_for(server))
    elapsed = time.monotonic() - started
    assert records == DomainRecords(failures=("dns_timeout",))
    assert elapsed < LIFETIME_S + LIFETIME_GRACE_S + 0.5
    # SRV and TXT were asked together, not one after the other's timeout.
    srv, txt = first_asked(server, SERVICE, "SRV"), first_asked(server, SERVICE, "TXT")
    assert abs(srv - txt) < LIFETIME_S / 2


async def test_silent_targets_are_asked_together_and_cost_their_own_addresses(
    server: DnsServer,
) -> None:
    server.misbehave("node1.kos.test", "silent")
    server.misbehave("node2.kos.test", "silent")
    records = await lookup("kos.test", resolver_for(server))
    assert [t.addresses for t in records.targets] == [(), ()]
    assert records.failures == ("dns_timeout:node1.kos.test", "dns_timeout:node2.kos.test")
    assert records.txt["txtvers"] == "1"
    asked = [
        first_asked(server, host, rdtype)
        for host in ("node1.kos.test", "node2.kos.test")
        for rdtype in ("A", "AAAA")
    ]
    assert max(asked) - min(asked) < LIFETIME_S / 2


async def test_servfail_is_reported(server: DnsServer) -> None:
    server.misbehave(SERVICE, "servfail")
    records = await lookup("kos.test", resolver_for(server))
    assert records == DomainRecords(failures=("dns_servfail",))
    assert server.queries[(SERVICE, "SRV")] == 1  # SERVFAIL is not retried


@pytest.mark.parametrize(
    ("behaviour", "failure"), [("garbage", "dns_timeout"), ("garbage_over_tcp", "dns_malformed")]
)
async def test_garbage_is_a_failure_never_an_exception(
    server: DnsServer, behaviour: str, failure: str
) -> None:
    server.misbehave(SERVICE, behaviour)
    records = await lookup("kos.test", resolver_for(server))
    assert records == DomainRecords(failures=(failure,))
    if behaviour == "garbage_over_tcp":
        assert server.tcp[(SERVICE, "SRV")] == 1


async def test_a_target_failing_costs_that_target_only(server: DnsServer) -> None:
    server.misbehave("node2.kos.test", "servfail")
    records = await lookup("kos.test", resolver_for(server))
    assert [t.addresses for t in records.targets] == [("127.53.0.1",), ()]
    assert records.failures == ("dns_servfail:node2.kos.test",)
    assert records.txt["node_id"] == "did:kos:griot:7f3a9c"


async def test_no_nameserver_at_all_is_a_failure() -> None:
    resolver = new_resolver(None, timeout_s=LIFETIME_S)
    resolver.nameservers = []
    assert await lookup("kos.test", resolver) == DomainRecords(failures=("dns_no_nameservers",))


# -- caps, truncation and hostile records ------------------------------------------------------


async def test_targets_and_addresses_are_capped_and_large_answers_come_over_tcp() -> None:
    targets = MAX_TARGETS + 36
    zone: Zone = {
        (SERVICE, "SRV"): [f"{i % 7} 0 {30000 + i} t{i}.kos.test." for i in range(targets)],
        **{(f"t{i}.kos.test", "A"): [f"127.54.{i}.1"] for i in range(targets)},
        ("t0.kos.test", "A"): [f"127.55.0.{i}" for i in range(1, 21)],
        ("t0.kos.test", "AAAA"): ["::1"],
    }
    async with DnsServer(zone) as server:
        records = await lookup("kos.test", resolver_for(server))
    assert len(records.targets) == MAX_TARGETS
    assert [t.priority for t in records.targets] == sorted(t.priority for t in records.targets)
    assert records.targets[0].host == "t0.kos.test"
    assert len(records.targets[0].addresses) == MAX_ADDRESSES
    assert "srv_targets_capped" in records.failures
    assert "srv_addresses_capped:t0.kos.test" in records.failures
    assert server.tcp[(SERVICE, "SRV")] == 1  # 100 SRV records do not fit in 1,232 bytes
    asked = {name for name, rdtype in server.queries if rdtype == "A"}
    assert len(asked) == MAX_TARGETS
    assert asked == {t.host for t in records.targets}


async def test_hostile_txt_and_srv_records_are_dropped() -> None:
    zone: Zone = {
        (SERVICE, "SRV"): [
            "0 0 30437 node1.kos.test.",
            "0 0 0 portless.kos.test.",
            r"0 0 30437 bad\032name.kos.test.",
        ],
        (SERVICE, "TXT"): [
            r'"node_id=did:kos:a" "NODE_ID=did:kos:b" "flag" "=novalue" "bad\255=x"',
            r'"node_class=\255\254" "nul=a\000b" "path=//evil.example/x"',
        ],
        ("node1.kos.test", "A"): ["127.53.0.1"],
        ("portless.kos.test", "A"): ["127.53.0.2"],
    }
    async with DnsServer(zone) as server:
        records = await lookup("kos.test", resolver_for(server))
    assert [t.host for t in records.targets] == ["node1.kos.test"]
    assert records.txt == {"node_id": "did:kos:a", "path": "//evil.example/x"}
    assert set(records.failures) == {
        "srv_bad_port:portless.kos.test",
        "srv_bad_target",
        "txt_unsafe_path",
    }
    # The unsafe path is never used: the default path is.
    assert descriptor_urls(records, LOOPBACK_ONLY.allows)[0] == [
        "http://127.53.0.1:30437/.well-known/kos-node"
    ]


@pytest.mark.parametrize(
    ("path", "used"),
    [
        ("/kos", "/kos"),
        ("/a/b%20c;v=1", "/a/b%20c;v=1"),
        ("", "/.well-known/kos-node"),
        ("kos", "/.well-known/kos-node"),
        ("//evil.example/kos", "/.well-known/kos-node"),
        ("/a/../admin", "/.well-known/kos-node"),
        ("/a?q=1", "/.well-known/kos-node"),
        ("/a#frag", "/.well-known/kos-node"),
        ("/a b", "/.well-known/kos-node"),
        ("/a\\b", "/.well-known/kos-node"),
        ("/%zz", "/.well-known/kos-node"),
        ("/" + "a" * 1024, "/.well-known/kos-node"),
    ],
)
def test_only_a_safe_absolute_path_is_used(path: str, used: str) -> None:
    assert descriptor_path({"path": path}) == used


async def test_an_unnameable_domain_is_a_failure_without_a_query(server: DnsServer) -> None:
    assert await lookup("a" * 64 + ".test", resolver_for(server)) == DomainRecords(
        failures=("dns_bad_name",)
    )
    assert not server.queries


# -- the configured resolver ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("127.0.0.1", ("127.0.0.1", 53)),
        (" 10.0.0.53 ", ("10.0.0.53", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("2001:DB8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:65535", ("2001:db8::53", 65535)),
    ],
)
def test_nameservers_operators_write_are_accepted(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not an IP address"),
        ("dns.example", "not an IP address"),
        ("dns.example:53", "not an IP address"),
        ("127.0.0.1:0", "port '0'"),
        ("127.0.0.1:65536", "port '65536'"),
        ("127.0.0.1:+53", "port '\\+53'"),
        ("127.0.0.1:", "a port is missing"),
        ("127.0.0.1:٥٣", "port"),
        ("127.0.0.01", "not an IP address"),
        ("[::1]:", "a port is missing"),
        ("[::1]5353", "written \\[::1\\]:5353"),
        ("[::1", "written \\[::1\\]:5353"),
        ("[127.0.0.1]:53", "brackets are for IPv6"),
        ("fe80::1%eth0", "scoped"),
        ("https://dns.example/dns-query", "not an IP address"),
    ],
)
def test_other_nameservers_are_refused_clearly(text: str, why: str) -> None:
    with pytest.raises(InvalidValue, match=why) as caught:
        parse_nameserver(text)
    assert caught.value.field == "RONIN_DNS"
    assert "[::1]:5353" in caught.value.message  # the message shows the forms that work


def test_a_configured_nameserver_is_the_only_one_asked_and_everything_is_bounded() -> None:
    resolver = new_resolver(("127.0.0.1", 5353))
    [nameserver] = resolver.nameservers
    assert isinstance(nameserver, dns.nameserver.Do53Nameserver)
    assert (nameserver.address, nameserver.port) == ("127.0.0.1", 5353)
    assert resolver.lifetime == DEFAULT_TIMEOUT_S
    assert resolver.timeout <= resolver.lifetime
    assert resolver.search == []
    assert resolver.cache is None
    short = new_resolver(("::1", 53), timeout_s=0.2)
    assert (short.lifetime, short.timeout) == (0.2, 0.2)
    system = new_resolver(None)
    assert system.lifetime == DEFAULT_TIMEOUT_S
    assert all(ipaddress.ip_address(str(n)) for n in system.nameservers)

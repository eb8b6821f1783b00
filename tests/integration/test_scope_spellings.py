"""A Ronin never connects outside its scope policy, however a host is spelled (issue 10).

A canary listens on 127.65.0.1, outside the policy (127.77.0.0/16). Every hostile spelling of
its address reaches Ronin by each route a URL can take: a descriptor's peers, a redirect, a
DNS answer (one that changes between check and connect too), a did:kos peer map
(RONIN_PEERS), a did:web document, mDNS and SRV leads. The canary must see no connection, and
each refusal is counted with an honest reason.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import BeaconServer, make_descriptor
from ronin.config import Peer
from ronin.discovery import dns_sd, leads, mdns
from ronin.discovery.crawl import DiscoveryOptions
from ronin.discovery.http_probe import Failed, Fetched, fetch_descriptor, new_session
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.store.jobs import JobStore
from tests.integration.jobs_support import run_discovery_job
from tests.support.did_site import did_site, new_ca
from tests.support.dns_server import DnsServer
from tests.support.fleet import ConnectionRecorder, HostileServer, free_port, honest_fleet

CANARY = "127.65.0.1"
NODE = "127.77.9.2"
PORT = 30437
POLICY = ScopePolicy(parse_networks("127.77.0.0/16", field="RONIN_ALLOW"))


def spellings(port: int) -> dict[str, tuple[str, str]]:
    """Ways to write the canary's URL, and the reason each is refused."""
    return {
        "literal": (f"http://{CANARY}:{port}", "out_of_scope"),
        "fullwidth": (
            f"http://\uff11\uff12\uff17.\uff16\uff15.\uff10.\uff11:{port}",
            "non_canonical_host",
        ),
        "ideographic dots": (f"http://127\u300265\u30020\u30021:{port}", "non_canonical_host"),
        "trailing dot": (f"http://{CANARY}.:{port}", "non_canonical_address"),
        "decimal": (f"http://2134966273:{port}", "non_canonical_address"),
        "hex": (f"http://0x7f.0x41.0.1:{port}", "non_canonical_address"),
        "octal": (f"http://0177.0101.0.1:{port}", "non_canonical_address"),
        "short": (f"http://127.65.1:{port}", "non_canonical_address"),
        "mapped": (f"http://[::ffff:{CANARY}]:{port}", "out_of_scope"),
        "nat64": (f"http://[64:ff9b::7f41:1]:{port}", "out_of_scope"),
        "userinfo": (f"http://{NODE}@{CANARY}:{port}", "userinfo"),
        "percent": (f"http://%31%32%37.65.0.1:{port}", "non_canonical_host"),
        "zone id": (f"http://[fe80::1%25lo]:{port}", "zone_id"),
    }


@pytest.fixture
async def canary() -> AsyncIterator[tuple[ConnectionRecorder, int]]:
    async with ConnectionRecorder() as recorder:
        _, port = await recorder.add(CANARY, free_port(CANARY))
        yield recorder, port


@pytest.fixture
async def beacons() -> AsyncIterator[BeaconServer]:
    async with BeaconServer() as server:
        yield server


def options(**extra: Any) -> DiscoveryOptions:
    return DiscoveryOptions(
        policy=POLICY, rate=None, connect_timeout_s=0.5, total_timeout_s=1.5, **extra
    )


def failed_probes(job: Any) -> collections.Counter[str]:
    assert job.result is not None, job.error
    return collections.Counter(job.result["failed_probes"])


async def test_peers_in_every_spelling_of_an_address_outside_are_never_contacted(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    beacons: BeaconServer,
    canary: tuple[ConnectionRecorder, int],
) -> None:
    recorder, port = canary
    hostile = spellings(port)
    [honest_peer] = await honest_fleet(beacons, ["127.77.9.3"], PORT)
    peers = [url for url, _ in hostile.values()] + [honest_peer.url]
    await beacons.add(NODE, PORT, make_descriptor("did:kos:griot:n1", "Griot", (), peers))

    params = {
        "target": {"type": "network_cidr", "value": f"{NODE}/32"},
        "protocols": ["http-api"],
        "depth": 2,
        "ports": [PORT],
    }
    job = await run_discovery_job(db_url, pool, store, params, options())

    assert recorder.total == 0, "a listener outside the scope was contacted"
    assert job.status == "completed", job.error
    expected = collections.Counter(f"peer_{reason}" for _, reason in hostile.values())
    assert failed_probes(job) == expected
    assert beacons.requests[honest_peer.key] == 1, "the honest peer is still followed"


async def test_redirects_to_every_spelling_of_an_address_outside_are_not_followed(
    canary: tuple[ConnectionRecorder, int],
) -> None:
    recorder, port = canary
    reasons = {}
    async with HostileServer() as hostile, new_session(POLICY, concurrency=4) as session:
        for index, (name, (location, _)) in enumerate(spellings(port).items(), start=10):
            host = f"127.77.8.{index}"
            await hostile.add(host, PORT, "redirect_out_of_scope", location=location)
            result = await fetch_descriptor(
                session, f"http://{host}:{PORT}/.well-known/kos-node", POLICY, total_timeout_s=2
            )
            assert isinstance(result, Failed), name
            reasons[name] = result.reason
    assert recorder.total == 0, "a listener outside the scope was contacted"
    assert reasons == {name: reason for name, (_, reason) in spellings(port).items()}


async def test_a_name_is_checked_on_every_address_it_resolves_to_even_when_its_answer_changes(
    beacons: BeaconServer, canary: tuple[ConnectionRecorder, int]
) -> None:
    recorder, port = canary
    [inside] = await honest_fleet(beacons, ["127.77.9.4"], port)
    zone = {
        ("outside.test", "A"): [CANARY],
        ("mixed.test", "A"): [CANARY, "127.77.9.4"],
        ("rebind.test", "A"): ["127.77.9.4"],
        ("mapped.test", "AAAA"): [f"::ffff:{CANARY}"],
    }
    async with (
        DnsServer(zone) as dns,
        new_session(POLICY, concurrency=4, dns=dns_sd.new_resolver(dns.address)) as session,
    ):

        async def fetch(name: str) -> Fetched | Failed:
            url = f"http://{name}:{port}/.well-known/kos-node"
            return await fetch_descriptor(session, url, POLICY, total_timeout_s=2)

        outside, mapped = await fetch("outside.test"), await fetch("mapped.test")
        assert isinstance(outside, Failed)
        assert outside.reason == "out_of_scope"
        assert isinstance(mapped, Failed)
        assert mapped.reason == "out_of_scope"
        assert isinstance(await fetch("mixed.test"), Fetched)  # only its address inside
        assert isinstance(await fetch("rebind.test"), Fetched)
        dns._add("rebind.test", "A", [CANARY])  # the answer changes after the check
        await fetch("rebind.test")
    assert recorder.total == 0, "a listener outside the scope was contacted"
    assert beacons.requests[inside.key] == 3


@pytest.fixture
async def peer_map(canary: tuple[ConnectionRecorder, int]) -> AsyncIterator[str]:
    """A Ronin API whose map says the node lives at every spelling of the canary."""
    _, port = canary

    async def services(request: web.Request) -> web.Response:
        did = request.query["node_id"]
        items = [
            {"service_id": f"did:kos:service:x:{n}", "node_id": did, "endpoint": url}
            for n, (url, _) in enumerate(spellings(port).values())
        ]
        return web.Response(body=orjson.dumps({"items": items}), content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/services", services)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    peer_port = free_port(NODE)
    await web.TCPSite(runner, NODE, peer_port).start()
    try:
        yield f"http://{NODE}:{peer_port}"
    finally:
        await runner.cleanup()


async def test_endpoints_from_ronin_peers_in_any_spelling_stay_in_scope(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    canary: tuple[ConnectionRecorder, int],
    peer_map: str,
) -> None:
    recorder, _ = canary
    params = {"target": {"type": "did", "value": "did:kos:griot:far"}, "protocols": ["http-api"]}
    job = await run_discovery_job(
        db_url, pool, store, params, options(peers=(Peer(peer_map, None),))
    )
    assert recorder.total == 0, "a listener outside the scope was contacted"
    failures = failed_probes(job)
    assert sum(failures.values()) == len(spellings(0)), failures


async def test_did_web_endpoints_in_any_spelling_stay_in_scope(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    canary: tuple[ConnectionRecorder, int],
    tmp_path: Path,
) -> None:
    recorder, port = canary
    ca = new_ca(tmp_path)
    policy = ScopePolicy(parse_networks("127.77.0.0/16,127.0.0.1/32", field="RONIN_ALLOW"))
    async with did_site(ca) as site:
        did = site.did()
        site.serve(
            "/.well-known/did.json",
            {
                "id": did,
                "service": [
                    {"id": f"{did}#{n}", "type": "KosNode", "serviceEndpoint": url}
                    for n, (url, _) in enumerate(spellings(port).values())
                ],
            },
        )
        params = {"target": {"type": "did", "value": did}, "protocols": ["http-api"]}
        job = await run_discovery_job(
            db_url,
            pool,
            store,
            params,
            DiscoveryOptions(policy=policy, rate=None, ssl_context=ca.client_context()),
        )
    assert recorder.total == 0, "a listener outside the scope was contacted"
    assert job.status == "completed", job.error
    failures = failed_probes(job)
    assert sum(failures.values()) == len(spellings(0)), failures


async def test_mdns_and_srv_leads_outside_the_scope_are_not_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outside = [CANARY, f"::ffff:{CANARY}", "64:ff9b::7f41:1"]

    async def browse(window_s: float, *, interfaces: Any = None) -> list[mdns.Instance]:
        return [
            mdns.Instance(name="x._kos._tcp.local.", addresses=(address,), port=PORT, txt={})
            for address in outside
        ]

    monkeypatch.setattr(mdns, "browse", browse)
    found = await leads.from_mdns(0.1, (), POLICY, None)
    assert found.found == []
    assert found.failures == ["mdns_out_of_scope"] * len(outside)

    zone = {
        ("_kos._tcp.example.test", "SRV"): ["0 0 30437 far.example.test."],
        ("far.example.test", "A"): [CANARY],
        ("far.example.test", "AAAA"): [f"::ffff:{CANARY}"],
    }
    async with DnsServer(zone) as dns:
        records = await leads.from_domain(
            "example.test", ["dns-sd"], dns_sd.new_resolver(dns.address), POLICY
        )
    assert records.found == []
    assert records.failures.count("dns_answer_out_of_scope") == 2

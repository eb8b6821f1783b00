"""A `domain` target end to end: DNS-SD records from a real DNS server on loopback (the one
RONIN_DNS names), every SRV target in scope probed, answers out of scope never touched, and the
https fallback when the domain publishes no SRV record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import BeaconServer, demo_descriptor
from ronin.discovery import dns_sd
from ronin.discovery.crawl import DiscoveryOptions
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.models import ServiceFilter
from ronin.store.services import ServiceMap
from tests.integration.jobs_support import run_discovery_job
from tests.support.dns_server import DnsServer
from tests.support.fleet import ConnectionRecorder, free_port

POLICY = ScopePolicy(parse_networks("127.47.0.0/16", field="RONIN_ALLOW"))
NODES = ("127.47.0.1", "127.47.0.2")
OUTSIDE = "127.201.0.1"  # loopback, reachable, but outside the scope


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[list[tuple[str, int]], tuple[str, int]]]:
    """Two beacons in scope, and a listener out of scope that counts connections."""
    async with BeaconServer() as beacons, ConnectionRecorder() as outside:
        nodes = []
        for host in NODES:
            port = free_port(host)
            await beacons.add(host, port, demo_descriptor(host, port))
            nodes.append((host, port))
        yield nodes, await outside.add(OUTSIDE)
        assert outside.total == 0, "a DNS answer out of scope was probed"


async def discover(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    domain: str,
    dns: DnsServer,
    protocols: list[str],
) -> Job:
    options = DiscoveryOptions(
        policy=POLICY,
        rate=None,
        connect_timeout_s=1,
        total_timeout_s=3,
        dns=dns_sd.new_resolver(dns.address, timeout_s=2),
    )
    params = {"target": {"type": "domain", "value": domain}, "protocols": protocols}
    return await run_discovery_job(db_url, pool, store, params, options)


async def test_every_srv_target_in_scope_is_probed_and_none_outside(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    fleet: tuple[list[tuple[str, int]], tuple[str, int]],
) -> None:
    nodes, (outside_host, outside_port) = fleet
    zone = {
        ("_kos._tcp.kos.test", "SRV"): [
            f"0 0 {nodes[0][1]} node1.kos.test.",
            f"0 0 {nodes[1][1]} node2.kos.test.",
            f"0 0 {outside_port} elsewhere.kos.test.",
        ],
        ("_kos._tcp.kos.test", "TXT"): ['"txtvers=1"'],
        ("node1.kos.test", "A"): [nodes[0][0]],
        ("node2.kos.test", "A"): [nodes[1][0]],
        ("elsewhere.kos.test", "A"): [outside_host],
    }
    async with DnsServer(zone) as dns:
        job = await discover(db_url, pool, store, "kos.test", dns, ["dns-sd", "http-api"])
    assert job.status == "completed", job.error
    assert job.result is not None
    assert job.result["failed_probes"] == {"dns_answer_out_of_scope": 1}
    assert job.result["stats"]["nodes"] == 2
    services = (await service_map.find(ServiceFilter())).items
    assert {s.node_id for s in services} == {
        demo_descriptor(host, port)["node_id"] for host, port in nodes
    }
    assert {s.discovery_metadata["discovery_method"] for s in services} == {"dns_srv"}


async def test_without_srv_records_the_domain_itself_is_asked_through_the_same_resolver(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    zone = {("fallback.kos.test", "A"): ["127.47.0.9"]}  # nothing listens on its 443
    async with DnsServer(zone) as dns:
        job = await discover(db_url, pool, store, "fallback.kos.test", dns, ["dns-sd", "http-api"])
        asked = set(dns.queries)
    assert ("_kos._tcp.fallback.kos.test", "SRV") in asked
    assert ("fallback.kos.test", "A") in asked  # the https fallback, via RONIN_DNS
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["failed_probes"] == {"refused": 1}


async def test_a_domain_with_only_dns_sd_asked_and_no_records_finds_nothing(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    async with DnsServer({}) as dns:
        job = await discover(db_url, pool, store, "empty.kos.test", dns, ["dns-sd"])
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["stats"]["hosts_probed"] == 0

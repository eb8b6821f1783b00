"""Discovery against fleets of beacons on loopback: depth, hostile nodes, scope, ownership."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import BeaconServer
from ronin.discovery.crawl import DiscoveryOptions, run_discovery
from ronin.discovery.crawl_state import CrawlReport
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.discovery.sweep_stage import new_sweep
from ronin.jobs.context import JobContext
from ronin.jobs.submit import submit_job
from ronin.store.jobs import JobStore
from ronin.store.models import ServiceFilter
from ronin.store.services import ServiceMap
from tests.integration.jobs_support import running_worker, wait_for
from tests.support.fleet import (
    Beacon,
    ConnectionRecorder,
    HostileServer,
    addresses,
    free_port,
    honest_fleet,
)

ALLOW = "127.42.0.0/16,127.43.0.0/16,127.44.0.0/16"
OUTSIDE = "127.200.0.1"  # loopback, so reachable, but outside ALLOW
POLICY = ScopePolicy(parse_networks(ALLOW, field="RONIN_ALLOW"))
PORT = 30437


def executor(**options: Any) -> Any:
    settings = DiscoveryOptions(
        policy=POLICY, rate=None, connect_timeout_s=0.5, total_timeout_s=1.5, **options
    )

    async def run(context: JobContext) -> CrawlReport:
        return await run_discovery(context, settings)

    return run


def params(target: str, depth: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "target": {"type": "network_cidr", "value": target},
        "protocols": ["http-api"],
        "depth": depth,
        "ports": [PORT],
    } | extra


@pytest.fixture
async def beacons() -> AsyncIterator[BeaconServer]:
    async with BeaconServer() as server:
        yield server


async def discover(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, job_params: dict[str, Any]
) -> Any:
    job, _ = await submit_job(store, job_params, max_attempts=1)
    async with running_worker(db_url, pool, executor=executor()):
        return await wait_for(store, job.job_id)


async def all_service_ids(service_map: ServiceMap) -> set[str]:
    page = await service_map.find(ServiceFilter(), limit=1000)
    return {service.service_id for service in page.items}


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_depth_follows_peers_exactly_that_far(
    depth: int,
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    # Level 1: 24 nodes in the target /20; each names a node of the next /24, and so on.
    levels = [
        addresses("127.42.16.0/20", 24, seed=depth),
        addresses("127.43.1.0/24", 12, seed=depth),
        addresses("127.43.2.0/24", 6, seed=depth),
        addresses("127.43.3.0/24", 3, seed=depth),
    ]
    fleets = []
    for level, hosts in enumerate(levels):
        following = levels[level + 1] if level + 1 < len(levels) else []
        extra = (
            {i: [f"http://{following[i % len(following)]}:{PORT}"] for i in range(len(hosts))}
            if following
            else None
        )
        fleets.append(await honest_fleet(beacons, hosts, PORT, extra_peers=extra))

    job = await discover(db_url, pool, store, params("127.42.16.0/20", depth))
    assert job.status == "completed", job.error

    expected = {sid for fleet in fleets[:depth] for beacon in fleet for sid in beacon.service_ids}
    assert await all_service_ids(service_map) == expected
    assert {sid for sid, _ in await store.service_ids(job.job_id)} == expected
    for level, fleet in enumerate(fleets):
        hits = {beacons.requests[b.key] for b in fleet}
        assert hits == ({1} if level < depth else {0}), f"level {level + 1}"
    assert job.result is not None
    assert job.result["stats"]["nodes"] == sum(len(f) for f in fleets[:depth])
    assert job.result["services"] == {"new": len(expected), "refreshed": 0}

    beacon = fleets[depth - 1][0]
    stored = await service_map.get(beacon.service_ids[0])
    assert stored is not None
    source = beacon.descriptor["services"][0]
    assert (stored.node_id, stored.node_class) == (beacon.node_id, beacon.descriptor["node_class"])
    assert (stored.endpoint, stored.capabilities) == (
        source["endpoint"],
        list(source["capabilities"]),
    )
    metadata = stored.discovery_metadata
    assert metadata["discovery_method"] == ("http_probe" if depth == 1 else "peer_referral")
    assert metadata["job_id"] == str(job.job_id)
    assert metadata["protocols"] == list(source["protocols"])
    assert metadata["hieros_compliance"] == beacon.descriptor["hieros_compliance"]
    assert metadata["response_time_ms"] >= 0
    assert "first_seen" in metadata


async def test_a_second_scan_refreshes_without_duplicating(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    fleet = await honest_fleet(beacons, addresses("127.42.5.0/24", 5, seed=1), PORT)
    first = await discover(db_url, pool, store, params("127.42.5.0/24"))
    second = await discover(db_url, pool, store, params("127.42.5.0/24"))
    services = sum(len(b.service_ids) for b in fleet)
    assert first.result["services"] == {"new": services, "refreshed": 0}
    assert second.result["services"] == {"new": 0, "refreshed": services}
    assert len(await all_service_ids(service_map)) == services


HOSTILE = {
    "reset": "reset",
    "hang": "timeout",
    "slow_drip": "timeout",
    "endless": "too_large",
    "huge": "too_large",
    "gzip_bomb": "too_large",
    "invalid_json": "invalid_json",
    "wrong_types": "invalid_descriptor",
    "nul_bytes": "invalid_descriptor",
    "overlong_node_class": "invalid_descriptor",
    "redirect_loop": "too_many_redirects",
    "redirect_out_of_scope": "out_of_scope",
    "not_json_content_type": "not_json",
    "http_500": "http_status",
    "bad_http": "bad_http",
}


async def test_hostile_nodes_cost_one_failed_probe_each(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    hosts = addresses("127.44.7.0/24", len(HOSTILE) + 3, seed=4)
    async with HostileServer() as hostile, ConnectionRecorder() as outside:
        trap = await outside.add(OUTSIDE, free_port(OUTSIDE))
        for host, behaviour in zip(hosts, HOSTILE, strict=False):
            options = (
                {"location": f"http://{trap[0]}:{trap[1]}/"}
                if (behaviour == "redirect_out_of_scope")
                else {}
            )
            await hostile.add(host, PORT, behaviour, **options)
        await hostile.add(hosts[-3], PORT, "overlong_ids")
        honest_host = hosts[-2]
        [honest] = await honest_fleet(
            beacons,
            [honest_host],
            PORT,
            extra_peers={0: [f"http://{trap[0]}:{trap[1]}", "did:kos:nobody:0"]},
        )
        job = await discover(db_url, pool, store, params("127.44.7.0/24", depth=2))
        assert outside.total == 0, "a listener outside the scope was contacted"

    assert job.status == "completed", job.error
    failures = job.result["failed_probes"]
    for behaviour, reason in HOSTILE.items():
        assert failures.get(reason, 0) >= 1, (behaviour, reason, failures)
    assert failures["peer_out_of_scope"] == 1
    assert failures["skipped:bad_service_id"] == 1
    # The honest node's services, and the one valid service of the node with an overlong id.
    found = await all_service_ids(service_map)
    assert set(honest.service_ids) < found
    assert len(found) == len(honest.service_ids) + 1


async def test_a_node_claiming_anothers_service_id_leaves_it_with_its_owner(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    owner_host, impostor_host = "127.42.9.10", "127.42.9.20"
    [owner] = await honest_fleet(beacons, [owner_host], PORT)
    stolen = dict(owner.descriptor)
    stolen["node_id"] = "did:kos:musa:impostor"
    stolen["services"] = [
        dict(owner.descriptor["services"][0], endpoint=f"http://{impostor_host}:{PORT}/evil")
    ]
    await beacons.add(impostor_host, PORT, stolen)

    await discover(db_url, pool, store, params(f"{owner_host}/32"))
    job = await discover(db_url, pool, store, params(f"{impostor_host}/32"))
    assert job.status == "completed"
    assert job.result["conflict_count"] == 1
    [conflict] = job.result["conflicts"]
    assert conflict == {
        "service_id": owner.service_ids[0],
        "claimed_by": "did:kos:musa:impostor",
        "owner": owner.node_id,
    }
    stored = await service_map.get(owner.service_ids[0])
    assert stored is not None
    assert stored.node_id == owner.node_id
    assert stored.endpoint == owner.descriptor["services"][0]["endpoint"]


async def test_a_target_outside_the_scope_is_refused_before_any_packet(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore
) -> None:
    async with ConnectionRecorder() as outside:
        await outside.add(OUTSIDE, PORT)
        job, _ = await submit_job(store, params(f"{OUTSIDE}/32"), max_attempts=3)
        async with running_worker(db_url, pool, executor=executor()):
            job = await wait_for(store, job.job_id)
        assert outside.total == 0
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error is not None
    assert job.error["code"] == "FORBIDDEN_TARGET"


def walk_order(job_id: uuid.UUID, network: str) -> list[str]:
    """The addresses of a job's sweep of ``network`` in the order its seeded walk probes them."""
    sweep = new_sweep(ipaddress.ip_network(network), (PORT,), job_id, None)
    return [probe.address for probe in sweep]


async def claimant_of(beacons: BeaconServer, owner: Beacon, host: str, node_id: str) -> None:
    """A beacon at ``host``, another node claiming ``owner``'s first service_id."""
    claimed = dict(owner.descriptor, node_id=node_id)
    claimed["services"] = [
        dict(owner.descriptor["services"][0], endpoint=f"http://{host}:{PORT}/klf")
    ]
    await beacons.add(host, PORT, claimed)


@pytest.mark.parametrize("run", range(6))
async def test_two_nodes_of_one_sweep_claiming_one_id_the_earlier_probed_owns_it(
    run: int,
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    network = f"127.43.{40 + run}.0/24"
    job, _ = await submit_job(store, params(network), max_attempts=1)
    order = walk_order(job.job_id, network)
    early, late = order[10], order[200]
    # Half the runs the node listing the service is probed first, half its claimant is.
    lister_host, claimant_host = (early, late) if run % 2 else (late, early)
    [lister] = await honest_fleet(beacons, [lister_host], PORT)
    claimant = f"did:kos:musa:claimant{run}"
    await claimant_of(beacons, lister, claimant_host, claimant)
    owner, loser = (
        (lister.node_id, claimant) if lister_host == early else (claimant, lister.node_id)
    )

    async with running_worker(db_url, pool, executor=executor()):
        done = await wait_for(store, job.job_id)
    assert done.status == "completed", done.error
    contested = lister.service_ids[0]
    assert done.result["conflict_count"] == 1
    assert done.result["conflicts"] == [
        {"service_id": contested, "claimed_by": loser, "owner": owner}
    ]
    stored = await service_map.get(contested)
    assert stored is not None
    assert stored.node_id == owner
    assert stored.discovery_metadata["job_id"] == str(job.job_id)
    # Both claims are accounted for: the contested id found once (new), the other a conflict.
    assert done.result["services"] == {"new": len(lister.service_ids), "refreshed": 0}
    assert {sid for sid, _ in await store.service_ids(job.job_id)} == set(lister.service_ids)


async def test_two_jobs_sweeping_one_pair_of_claimants_at_once_lose_no_claim(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    network = "127.43.60.0/24"
    [lister] = await honest_fleet(beacons, ["127.43.60.10"], PORT)
    claimant = "did:kos:musa:claimant60"
    await claimant_of(beacons, lister, "127.43.60.20", claimant)
    jobs = [(await submit_job(store, params(network), max_attempts=1))[0] for _ in range(2)]
    async with running_worker(db_url, pool, executor=executor()):
        done = [await wait_for(store, job.job_id) for job in jobs]

    contested = lister.service_ids[0]
    stored = await service_map.get(contested)
    assert stored is not None
    nodes = {lister.node_id, claimant}
    assert stored.node_id in nodes
    reported = []
    for job in done:
        assert job.status == "completed", job.error
        # Each job saw both claims: the contested id is linked to it and every conflict it
        # reports is one of the two nodes against the other.
        linked = {sid for sid, _ in await store.service_ids(job.job_id)}
        assert linked == set(lister.service_ids), job.result
        assert job.result["conflict_count"] == len(job.result["conflicts"])
        for conflict in job.result["conflicts"]:
            assert conflict["service_id"] == contested
            assert {conflict["claimed_by"], conflict["owner"]} == nodes
        reported += job.result["conflicts"]
    # The node that does not hold the id lost its claim in at least one job, which said so.
    assert any(c["claimed_by"] != stored.node_id for c in reported)

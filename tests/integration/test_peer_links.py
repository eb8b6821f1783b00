"""Peer links from a real crawl of a fleet on loopback: exactly the links its descriptors
name, re-sighted by a re-scan, removed with their nodes, and laid out once."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import BeaconServer
from ronin.store.jobs import JobStore
from ronin.store.layout import NEAR_MAX
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.integration.test_discovery import PORT, beacons, discover, params
from tests.support.fleet import addresses, chain, honest_fleet

__all__ = ["beacons"]  # the fixture, shared with the discovery tests

NOW = datetime.now(UTC)
OUTSIDE_SWEEP = "127.43.8.1"  # allowed, but reached only as a peer


def stored_links(db_url: str) -> dict[tuple[str, str], tuple[Any, Any, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT source_node, target_node, first_seen, last_seen, job_id::text FROM node_links"
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


async def test_a_crawl_records_the_links_its_nodes_name_and_a_rescan_resights_them(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    # Six swept nodes in a ring (each names the next, the last the first: every peer is an
    # address the sweep probes anyway), and node 2 also names a node outside the sweep.
    hosts = addresses("127.42.8.0/24", 6, seed=3)
    ring = {**chain(6), 5: [0]}
    fleet = await honest_fleet(
        beacons, hosts, PORT, peers=ring, extra_peers={2: [f"http://{OUTSIDE_SWEEP}:{PORT}"]}
    )
    (outsider,) = await honest_fleet(beacons, [OUTSIDE_SWEEP], PORT)
    ids = [beacon.node_id for beacon in fleet]
    in_ring = {(ids[a], ids[b]) for a, peers in ring.items() for b in peers}

    first = await discover(db_url, pool, store, params("127.42.8.0/24", depth=1))
    assert first.status == "completed", first.error
    links = stored_links(db_url)
    assert set(links) == in_ring  # depth 1 follows no peer: the outsider is not fetched
    assert {job for _, _, job in links.values()} == {str(first.job_id)}

    # Laid out once: the same positions on every read.
    drawn = await service_map.links.graph()
    positions = {n["id"]: (n["x"], n["y"]) for n in drawn["nodes"]}
    assert set(positions) == set(ids)
    assert len(set(positions.values())) == len(ids)
    assert {(k["source"], k["target"]) for k in drawn["links"]} == in_ring
    again = await service_map.links.graph()
    assert {n["id"]: (n["x"], n["y"]) for n in again["nodes"]} == positions

    second = await discover(db_url, pool, store, params("127.42.8.0/24", depth=2))
    assert second.status == "completed", second.error
    relinked = stored_links(db_url)
    assert set(relinked) == in_ring | {(ids[2], outsider.node_id)}
    for key, (first_seen, last_seen, _) in links.items():
        assert relinked[key][0] == first_seen
        assert relinked[key][1] > last_seen
    assert {job for _, _, job in relinked.values()} == {str(second.job_id)}

    # The new node lands beside the node that referred it; the others do not move.
    redrawn = {n["id"]: (n["x"], n["y"]) for n in (await service_map.links.graph())["nodes"]}
    assert {i: redrawn[i] for i in ids} == positions
    assert math.dist(redrawn[outsider.node_id], positions[ids[2]]) <= NEAR_MAX + 0.01

    # A node whose services are removed loses its links both ways, and its position.
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM discovered_services WHERE node_id = %s", (ids[3],))
        placed = conn.execute("SELECT node_id FROM node_layout").fetchall()
    assert set(stored_links(db_url)) == (in_ring - {(ids[2], ids[3]), (ids[3], ids[4])}) | {
        (ids[2], outsider.node_id)
    }
    assert {row[0] for row in placed} == (set(ids) - {ids[3]}) | {outsider.node_id}


async def test_links_not_seen_within_the_retention_are_pruned_with_the_map(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    beacons: BeaconServer,
) -> None:
    hosts = addresses("127.42.9.0/24", 3, seed=4)
    fleet = await honest_fleet(beacons, hosts, PORT, peers=chain(3))
    job = await discover(db_url, pool, store, params("127.42.9.0/24", depth=1))
    assert job.status == "completed", job.error
    assert set(stored_links(db_url)) == {
        (fleet[0].node_id, fleet[1].node_id),
        (fleet[1].node_id, fleet[2].node_id),
    }
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE node_links SET last_seen = last_seen - interval '2 hours'")
    # The services were seen just now and stay; their links, not seen for 2 hours, go.
    assert await service_map.prune(not_seen_for=timedelta(hours=1)) == 0
    assert stored_links(db_url) == {}
    assert await service_map.links.prune(not_seen_for=timedelta(hours=1)) == 0


async def test_concurrent_batches_of_links_and_placements_neither_deadlock_nor_disagree(
    db_url: str, service_map: ServiceMap
) -> None:
    nodes = [f"did:kos:griot:{i:03d}" for i in range(40)]
    await service_map.upsert(
        Sighting(f"svc-{i}", node, "Griot", f"http://127.0.0.{i + 1}/", ("klf",), NOW)
        for i, node in enumerate(nodes)
    )
    every = [(a, b) for a in nodes for b in nodes if a != b]
    rng = random.Random(7)
    batches = [rng.sample(every, 400) for _ in range(8)]
    for batch in batches[1::2]:
        batch.reverse()  # opposite orders: only sorting the writes keeps them apart
    jobs = [uuid.uuid4() for _ in batches]
    written = await asyncio.gather(
        *(service_map.links.record(job, batch) for job, batch in zip(jobs, batches, strict=True))
    )
    assert written == [400] * len(batches)
    assert set(stored_links(db_url)) == {link for batch in batches for link in batch}

    drawn = await asyncio.gather(*(service_map.links.graph() for _ in range(4)))
    placements = [{n["id"]: (n["x"], n["y"]) for n in graph["nodes"]} for graph in drawn]
    assert all(placement == placements[0] for placement in placements)
    assert len(set(placements[0].values())) == len(nodes)

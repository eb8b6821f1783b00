"""did:kos targets resolved through a second Ronin (RONIN_PEERS), then re-probed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool

from ronin.api.app import create_app
from ronin.beacon import BeaconServer, demo_descriptor
from ronin.config import Peer
from ronin.discovery.crawl import DiscoveryOptions
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.store.database import Database
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.models import ServiceFilter, Sighting
from ronin.store.services import ServiceMap
from tests.conftest import create_database, drop_database
from tests.integration.api_support import READ_TOKEN, TOKENS, settings_for
from tests.integration.jobs_support import run_discovery_job
from tests.support.fleet import free_port

HOST = "127.46.0.1"
POLICY = ScopePolicy(parse_networks("127.46.0.0/16", field="RONIN_ALLOW"))


@pytest.fixture
def peer_db_url(server_url: str, template_database: str) -> Iterator[str]:
    """The second Ronin's own database."""
    name = f"ronin_peer_{uuid.uuid4().hex[:12]}"
    yield create_database(server_url, name, template=template_database)
    drop_database(server_url, name)


@pytest.fixture
async def peer(peer_db_url: str) -> AsyncIterator[tuple[str, ServiceMap]]:
    """A second Ronin's API on loopback (with tokens), and its map to seed."""
    async with AsyncConnectionPool(peer_db_url, min_size=1, max_size=4, open=False) as pool:
        app = create_app(
            settings_for(peer_db_url, api_tokens=TOKENS),
            Database(pool=pool, conninfo=peer_db_url),
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        serving = asyncio.create_task(server.serve())
        for _ in range(1500):  # bounded: 30 s; uvicorn has no "started" event to wait on
            if server.started:
                break
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", ServiceMap(pool, freshness_window=timedelta(hours=1))
        finally:
            server.should_exit = True
            await serving


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, int, dict[str, Any]]]:
    """A beacon: its host, port and descriptor."""
    port = free_port(HOST)
    document = demo_descriptor(HOST, port)
    async with BeaconServer() as beacons:
        await beacons.add(HOST, port, document)
        yield HOST, port, document


def sightings_of(node_id: str, endpoint: str) -> list[Sighting]:
    return [
        Sighting(
            service_id=f"did:kos:service:seen-by-peer-{n}",
            node_id=node_id,
            node_class="Griot",
            endpoint=endpoint,
            capabilities=("klf",),
            seen_at=datetime.now(UTC),
        )
        for n in range(2)
    ]


async def discover(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, did: str, *peers: Peer
) -> Job:
    options = DiscoveryOptions(
        policy=POLICY, rate=None, connect_timeout_s=1, total_timeout_s=3, peers=peers
    )
    params = {"target": {"type": "did", "value": did}, "protocols": ["http-api"]}
    return await run_discovery_job(db_url, pool, store, params, options)


async def test_a_node_only_a_peer_knows_is_found_through_it_and_confirmed(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    peer: tuple[str, ServiceMap],
    node: tuple[str, int, dict[str, Any]],
) -> None:
    peer_url, peer_map = peer
    host, port, document = node
    did = document["node_id"]
    await peer_map.upsert(sightings_of(did, f"http://{host}:{port}/klf"))
    job = await discover(db_url, pool, store, did, Peer(peer_url, READ_TOKEN))
    assert job.status == "completed", job.error
    found = await service_map.find(ServiceFilter(node_id=did))
    # What the node itself lists, not what the peer said.
    assert {s.service_id for s in found.items} == {s["service_id"] for s in document["services"]}
    assert {s.discovery_metadata["discovery_method"] for s in found.items} == {"did_resolution"}


async def test_an_endpoint_that_now_serves_another_node_is_a_mismatch(
    db_url: str,
    pool: AsyncConnectionPool[Any],
    store: JobStore,
    service_map: ServiceMap,
    peer: tuple[str, ServiceMap],
    node: tuple[str, int, dict[str, Any]],
) -> None:
    peer_url, peer_map = peer
    host, port, document = node
    ghost = "did:kos:griot:moved-away"
    await peer_map.upsert(sightings_of(ghost, f"http://{host}:{port}/klf"))
    job = await discover(db_url, pool, store, ghost, Peer(peer_url, READ_TOKEN))
    assert job.status == "completed"
    assert job.result is not None
    assert job.result["failed_probes"] == {"node_id_mismatch": 1}
    assert [m["node_id"] for m in job.result["mismatches"]] == [document["node_id"]]
    assert (await service_map.find(ServiceFilter(node_id=ghost))).items == []
    assert (await service_map.find(ServiceFilter(node_id=document["node_id"]))).items == []


async def test_a_did_no_map_knows_fails_the_job_and_a_refusing_peer_is_counted(
    db_url: str, pool: AsyncConnectionPool[Any], store: JobStore, peer: tuple[str, ServiceMap]
) -> None:
    peer_url, _ = peer
    did = "did:kos:griot:nobody-knows"
    job = await discover(db_url, pool, store, did, Peer(peer_url, "not-a-token-of-the-peer"))
    assert job.status == "failed"
    assert job.error is not None
    assert "nobody-knows" in job.error["message"]
    assert job.result is not None
    assert job.result["failed_probes"] == {"peer_status_401": 1}
    unreachable = Peer(f"http://127.0.0.1:{free_port()}")
    job = await discover(db_url, pool, store, did, unreachable)
    assert job.result is not None
    assert job.result["failed_probes"] == {"peer_unreachable": 1}

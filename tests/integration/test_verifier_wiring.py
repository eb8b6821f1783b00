"""The verifier as the node builds it (ronin.jobs.verifying), against real beacons on loopback:
the settings reach it, a changed descriptor updates the map as a sighting does and an unchanged
one rewrites nothing, gone services are removed after their retention, and the counters move.

The liveness clock is driven through ``run_once(now=...)`` and ``prune(now=...)``, never slept on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import dns.exception
import pytest
from prometheus_client import REGISTRY

from ronin.beacon import BeaconServer, ServiceSpec, demo_descriptor, make_descriptor
from ronin.config import Settings
from ronin.discovery.http_probe import Fetched, fetch_descriptor, new_session
from ronin.discovery.sightings import observe
from ronin.jobs.verifier import Verifier
from ronin.node import Node, open_node
from tests.support.dns_server import DnsServer
from tests.support.fleet import addresses, free_port

NETWORK = "127.52.0.0/24"
FLEET = 3
ROW = "SELECT service_id, node_id, node_class, endpoint, capabilities, discovery_metadata"


def settings_for(db_url: str, **extra: str) -> Settings:
    return Settings.from_env({"RONIN_DATABASE_URL": db_url, "RONIN_ALLOW": NETWORK, **extra})


class Beacons:
    """A few beacons, each at its own loopback address, whose descriptors a test may change."""

    def __init__(self, server: BeaconServer, keys: list[tuple[str, int]]) -> None:
        self.server = server
        self.keys = keys

    def descriptor(self, index: int) -> dict[str, Any]:
        return demo_descriptor(*self.keys[index])

    def service_ids(self, index: int) -> list[str]:
        return [str(s["service_id"]) for s in self.descriptor(index)["services"]]


@pytest.fixture
async def beacons() -> AsyncIterator[Beacons]:
    hosts = addresses(NETWORK, FLEET, seed=52)
    async with BeaconServer() as server:
        keys = []
        for host in hosts:
            key = (host, free_port(host))
            keys.append(await server.add(*key, demo_descriptor(*key)))
        yield Beacons(server, keys)


@pytest.fixture
async def node(db_url: str) -> AsyncIterator[Node]:
    async with open_node(settings_for(db_url)) as opened:
        yield opened


async def discover(node: Node, beacons: Beacons) -> None:
    """Put the beacons in the map as a crawl does."""
    found = []
    async with new_session(node.policy, concurrency=4) as session:
        for rank, (host, port) in enumerate(beacons.keys):
            url = f"http://{host}:{port}/.well-known/kos-node"
            fetched = await fetch_descriptor(session, url, node.policy, total_timeout_s=3.0)
            assert isinstance(fetched, Fetched), fetched
            found += observe(
                fetched,
                discovery_method="http_probe",
                job_id=uuid.uuid4(),
                rank=(rank,),
                seen_at=datetime.now().astimezone(),
            ).sightings
    await node.services.upsert(found)


async def fetch_all(node: Node, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with node.database.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def server_now(node: Node) -> datetime:
    ((now,),) = await fetch_all(node, "SELECT now()")
    return now  # type: ignore[no-any-return]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_settings_reach_the_verifier(db_url: str) -> None:
    async with DnsServer({}) as dns_server:
        host, port = dns_server.address
        settings = settings_for(
            db_url,
            RONIN_VERIFY_INTERVAL_S="30",
            RONIN_VERIFY_GUARD_FRACTION="0.5",
            RONIN_GONE_RETENTION_S="3600",
            RONIN_DNS=f"{host}:{port}",
        )
        async with open_node(settings) as opened, opened.verifier() as verifier:
            assert isinstance(verifier, Verifier)
            assert verifier.options.guard_fraction == 0.5
            assert verifier.options.gone_retention == timedelta(hours=1)
            assert verifier.store.timing.interval == timedelta(seconds=30)
            assert set(verifier.self_checks) == {"database", "resolver"}
            for check in verifier.self_checks.values():
                await check()  # the database and the DNS server answer
        await dns_server.close()
        async with open_node(settings) as opened, opened.verifier() as verifier:
            assert verifier is not None
            with pytest.raises((dns.exception.DNSException, OSError)):  # gone: no answer
                await verifier.self_checks["resolver"]()


async def test_an_interval_of_0_turns_verification_off(db_url: str) -> None:
    settings = settings_for(db_url, RONIN_VERIFY_INTERVAL_S="0")
    async with open_node(settings) as opened, opened.verifier() as verifier:
        assert verifier is None


async def test_a_changed_descriptor_updates_the_map_as_a_sighting_does(
    node: Node, beacons: Beacons
) -> None:
    await discover(node, beacons)
    main, status = beacons.service_ids(0)
    old = beacons.descriptor(0)
    endpoint = old["services"][0]["endpoint"].replace("/klf", "/klf2")
    changed = make_descriptor(
        old["node_id"],
        "Tohunga",
        [
            ServiceSpec(main, endpoint, ("ritual_scheduling",)),
            ServiceSpec(status, old["services"][1]["endpoint"], ("node_status",)),
        ],
    )
    beacons.server.replace(beacons.keys[0], changed)
    (before,) = await fetch_all(
        node, ROW + ", xmin::text FROM discovered_services WHERE service_id = %s", main
    )
    async with node.verifier() as verifier:
        assert verifier is not None
        report = await verifier.run_once(now=await server_now(node) + timedelta(seconds=1))
    assert (report.claimed, report.failed) == (FLEET, 0)
    (row,) = await fetch_all(node, ROW + " FROM discovered_services WHERE service_id = %s", main)
    assert row[2:5] == ("Tohunga", endpoint, ["ritual_scheduling"])
    assert row[5]["discovery_method"] == "http_probe"  # how it was found is kept
    assert row[5]["first_seen"] == before[5]["first_seen"]
    # the status service changed its node's class only, and is rewritten for it
    (status_row,) = await fetch_all(
        node, "SELECT node_class FROM discovered_services WHERE service_id = %s", status
    )
    assert status_row == ("Tohunga",)
    states = await node_states(node, main, status)
    assert states == {main: "alive", status: "alive"}


async def node_states(node: Node, *service_ids: str) -> dict[str, str]:
    rows = await fetch_all(
        node,
        "SELECT service_id, state FROM service_liveness WHERE service_id = ANY(%s)",
        list(service_ids),
    )
    return dict(rows)


async def test_an_unchanged_descriptor_rewrites_nothing_but_last_seen(
    node: Node, beacons: Beacons
) -> None:
    await discover(node, beacons)
    everything = ROW + ", last_seen FROM discovered_services ORDER BY service_id"
    liveness = "SELECT service_id, state, state_since FROM service_liveness ORDER BY service_id"
    before, states_before = await fetch_all(node, everything), await fetch_all(node, liveness)
    async with node.verifier() as verifier:
        assert verifier is not None
        at = await server_now(node) + timedelta(seconds=1)
        for _ in range(2):  # two rounds: a refresh would show in either
            report = await verifier.run_once(now=at)
            assert (report.claimed, report.failed) == (FLEET, 0)
            at += verifier.store.timing.interval
    after = await fetch_all(node, everything)
    assert [row[:-1] for row in after] == [row[:-1] for row in before]
    assert all(new[-1] > old[-1] for new, old in zip(after, before, strict=True))  # verified
    assert await fetch_all(node, liveness) == states_before


async def test_gone_services_are_removed_after_their_retention(
    node: Node, beacons: Beacons, caplog: pytest.LogCaptureFixture
) -> None:
    await discover(node, beacons)
    main, status = beacons.service_ids(1)
    kept = beacons.descriptor(1)
    kept["services"] = kept["services"][:1]  # the node drops its status service
    beacons.server.replace(beacons.keys[1], kept)
    gone_before = sample("ronin_liveness_transitions_total", **{"from": "alive", "to": "gone"})
    answered_before = sample("ronin_liveness_checks_total", outcome="answered")
    async with node.verifier() as verifier:
        assert verifier is not None
        at = await server_now(node) + timedelta(seconds=1)
        with caplog.at_level(logging.INFO, logger="ronin.jobs.verifier"):
            await verifier.run_once(now=at)
        assert await node_states(node, main, status) == {main: "alive", status: "gone"}
        assert any(status in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        retention = verifier.options.gone_retention
        assert retention == timedelta(days=7)
        assert await verifier.prune(now=at + retention - timedelta(seconds=1)) == 0
        assert await verifier.prune(now=at + retention + timedelta(seconds=1)) == 1
    assert await node_states(node, main, status) == {main: "alive"}
    assert await node.services.get(status) is None
    assert sample("ronin_liveness_transitions_total", **{"from": "alive", "to": "gone"}) == (
        gone_before + 1
    )
    assert sample("ronin_liveness_checks_total", outcome="answered") == answered_before + FLEET


async def test_the_guard_and_failure_counters_move(
    node: Node, beacons: Beacons, caplog: pytest.LogCaptureFixture
) -> None:
    await discover(node, beacons)
    trips_before = sample("ronin_liveness_guard_trips_total")
    refused_before = sample("ronin_liveness_checks_total", outcome="refused")
    unverified = {"from": "alive", "to": "unverified"}
    unverified_before = sample("ronin_liveness_transitions_total", **unverified)
    await beacons.server.close()
    async with node.verifier() as verifier:
        assert verifier is not None

        async def failing_database() -> None:
            raise OSError("the database is away")

        verifier.self_checks["database"] = failing_database
        with caplog.at_level(logging.WARNING, logger="ronin.jobs.verifier"):
            report = await verifier.run_once(now=await server_now(node) + timedelta(seconds=1))
    assert (report.failed, report.guarded) == (FLEET, True)
    assert sample("ronin_liveness_guard_trips_total") == trips_before + 1
    assert sample("ronin_liveness_checks_total", outcome="refused") == refused_before + FLEET
    assert sample("ronin_liveness_transitions_total", **unverified) == (
        unverified_before + 2 * FLEET
    )
    trip = [r for r in caplog.records if "partition guard holds" in r.getMessage()]
    assert len(trip) == 1
    assert trip[0].levelno == logging.WARNING
    assert "self_check:database" in trip[0].getMessage()


async def test_a_service_the_node_newly_lists_enters_the_map(node: Node, beacons: Beacons) -> None:
    await discover(node, beacons)
    grown = beacons.descriptor(2)
    new_id = grown["services"][0]["service_id"] + ":extra"
    grown["services"].append({**grown["services"][0], "service_id": new_id})
    grown["hieros_compliance"] = {**grown["hieros_compliance"], "verified": True}
    beacons.server.replace(beacons.keys[2], grown)
    async with node.verifier() as verifier:
        assert verifier is not None
        await verifier.run_once(now=await server_now(node) + timedelta(seconds=1))
    added = await node.services.get(new_id)
    assert added is not None
    assert added.node_id == grown["node_id"]
    assert added.discovery_metadata["discovery_method"] == "verify"
    for sid in beacons.service_ids(2):  # the siblings took the descriptor's new metadata
        sibling = await node.services.get(sid)
        assert sibling is not None
        assert sibling.discovery_metadata["hieros_compliance"]["verified"] is True
    assert await node_states(node, new_id) == {new_id: "alive"}


async def test_the_running_verifier_prunes_what_outlived_its_retention(
    db_url: str, beacons: Beacons
) -> None:
    async with open_node(settings_for(db_url, RONIN_GONE_RETENTION_S="60")) as opened:
        await discover(opened, beacons)
        doomed = beacons.service_ids(0)[1]
        kept = beacons.descriptor(0)
        kept["services"] = kept["services"][:1]  # its node no longer lists it
        beacons.server.replace(beacons.keys[0], kept)
        async with opened.database.pool.connection() as conn:
            await conn.execute(
                "UPDATE service_liveness SET state = 'gone', state_since = now() - interval '1h'"
                " WHERE service_id = %s",
                (doomed,),
            )
        async with opened.verifier() as verifier:
            assert verifier is not None
            stop = asyncio.Event()
            running = asyncio.create_task(verifier.run(stop))
            try:
                async with asyncio.timeout(30):
                    while await opened.services.get(doomed) is not None:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await running
        assert verifier.counts.pruned == 1
        assert await opened.services.get(beacons.service_ids(0)[0]) is not None

"""The verifier against real beacons on loopback: the nodes that stop are exactly the ones that
go suspect then gone; when every node stops at once, the partition guard keeps them unverified
and the map heals when they come back.

Fetches are real; the liveness clock is driven through ``run_once(now=...)``, never slept on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import BeaconServer, demo_descriptor
from ronin.discovery.http_probe import Failed, Fetched, fetch_descriptor, new_session
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.discovery.sightings import observe
from ronin.jobs.verifier import BatchReport, Verifier, VerifierOptions
from ronin.store.liveness import LivenessStore, Timing
from ronin.store.services import ServiceMap
from tests.support.fleet import addresses, free_port

NETWORK = "127.51.0.0/24"
POLICY = ScopePolicy(parse_networks(NETWORK, field="RONIN_ALLOW"))
INTERVAL = timedelta(seconds=60)
FLEET = 12
RETRY = Timing.of(INTERVAL).retry


class Fleet:
    """Beacons that can be stopped and started again one by one, each at its own address."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.keys = [(host, free_port(host)) for host in hosts]
        self._servers: dict[tuple[str, int], BeaconServer] = {}

    async def start(self, *indexes: int, capabilities: Sequence[str] | None = None) -> None:
        """Start these beacons (with other capabilities than the demo's, if given)."""
        for index in indexes:
            key = self.keys[index]
            server = BeaconServer()
            if capabilities is None:
                await server.add(*key, demo_descriptor(*key))
            else:
                await server.add(*key, demo_descriptor(*key, capabilities=capabilities))
            self._servers[key] = server

    async def stop(self, *indexes: int) -> None:
        for index in indexes:
            await self._servers.pop(self.keys[index]).close()

    def service_ids(self, *indexes: int) -> set[str]:
        return {
            str(service["service_id"])
            for index in indexes
            for service in demo_descriptor(*self.keys[index])["services"]
        }

    async def close(self) -> None:
        for server in self._servers.values():
            await server.close()
        self._servers.clear()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    running = Fleet(addresses(NETWORK, FLEET, seed=51))
    await running.start(*range(FLEET))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session(POLICY, concurrency=16, connect_timeout_s=2.0) as opened:
        yield opened


def fetcher(session: aiohttp.ClientSession) -> partial[Any]:
    return partial(fetch_descriptor, session, policy=POLICY, total_timeout_s=3.0)


async def discover(service_map: ServiceMap, session: aiohttp.ClientSession, fleet: Fleet) -> None:
    """Put the fleet in the map as a crawl does: fetch each descriptor, record its sightings."""
    found = []
    for rank, (host, port) in enumerate(fleet.keys):
        fetched = await fetch_descriptor(
            session, f"http://{host}:{port}/.well-known/kos-node", POLICY, total_timeout_s=3.0
        )
        assert isinstance(fetched, Fetched), fetched
        found += observe(
            fetched,
            discovery_method="http_probe",
            job_id=uuid.uuid4(),
            rank=(rank,),
            seen_at=datetime.now().astimezone(),
        ).sightings
    await service_map.upsert(found)


async def states(pool: AsyncConnectionPool[Any]) -> dict[str, set[str]]:
    """service_ids by state."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT state, service_id FROM service_liveness")
        rows = await cur.fetchall()
    by_state: dict[str, set[str]] = {}
    for state, sid in rows:
        by_state.setdefault(state, set()).add(sid)
    return by_state


async def server_now(pool: AsyncConnectionPool[Any]) -> datetime:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def verifier(pool: AsyncConnectionPool[Any], session: aiohttp.ClientSession) -> Verifier:
    store = LivenessStore(pool, Timing.of(INTERVAL))
    return Verifier(store, fetcher(session), VerifierOptions(worker_id="v1", fetch_timeout_s=3.0))


async def test_exactly_the_stopped_beacons_go_suspect_then_gone(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    fleet: Fleet,
) -> None:
    await discover(service_map, session, fleet)
    checker = verifier(pool, session)
    at = await server_now(pool) + timedelta(seconds=1)
    first = await checker.run_once(now=at)
    assert (first.claimed, first.failed) == (FLEET, 0)

    await fleet.stop(3, 8)
    stopped, running = fleet.service_ids(3, 8), fleet.service_ids(*set(range(FLEET)) - {3, 8})
    at += INTERVAL
    round_two = await checker.run_once(now=at)
    assert (round_two.claimed, round_two.failed, round_two.guarded) == (FLEET, 2, False)
    assert await states(pool) == {"alive": running, "suspect": stopped}

    retries = 0
    while (await states(pool)).get("suspect"):
        at += RETRY
        report = await checker.run_once(now=at)
        assert (report.claimed, report.failed, report.guarded) == (2, 2, False)
        retries += 1
    assert await states(pool) == {"alive": running, "gone": stopped}
    assert retries == 2  # gone at the third failure, 0.4 intervals after the first
    assert checker.counts.guard_trips == 0
    assert checker.counts.transitions == {("alive", "suspect"): 4, ("suspect", "gone"): 4}
    assert checker.counts.checks["refused"] == 6

    at += INTERVAL  # the next round checks only the living
    last = await checker.run_once(now=at)
    assert (last.claimed, last.failed) == (FLEET - 2, 0)


async def test_when_every_beacon_stops_the_guard_keeps_them_unverified_then_they_heal(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    fleet: Fleet,
) -> None:
    await discover(service_map, session, fleet)
    everything = fleet.service_ids(*range(FLEET))
    checker = verifier(pool, session)
    at = await server_now(pool) + timedelta(seconds=1)
    await checker.run_once(now=at)

    await fleet.stop(*range(FLEET))
    at += INTERVAL
    for _ in range(6):  # well past the confirmation period
        report = await checker.run_once(now=at)
        assert (report.claimed, report.failed, report.guarded) == (FLEET, FLEET, True)
        assert report.reasons == ("share",)
        assert await states(pool) == {"unverified": everything}
        at += INTERVAL  # under the guard, failing nodes are checked once an interval
    assert checker.counts.guard_trips == 1
    assert await checker.run_once(now=at - INTERVAL + RETRY) == BatchReport(0, 0, True, None)

    await fleet.start(*range(FLEET))
    healed = await checker.run_once(now=at)
    assert (healed.claimed, healed.failed, healed.guarded) == (FLEET, 0, False)
    assert await states(pool) == {"alive": everything}


async def test_a_failing_self_check_holds_the_guard_for_a_single_failure(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    fleet: Fleet,
) -> None:
    await discover(service_map, session, fleet)
    store = LivenessStore(pool, Timing.of(INTERVAL))

    async def resolver_down() -> None:
        raise OSError("the resolver does not answer")

    checker = Verifier(
        store,
        fetcher(session),
        VerifierOptions(worker_id="v1", fetch_timeout_s=3.0),
        self_checks={"database": store.ping, "resolver": resolver_down},
    )
    at = await server_now(pool) + timedelta(seconds=1)
    await checker.run_once(now=at)
    await fleet.stop(0)
    report = await checker.run_once(now=at + INTERVAL)
    assert report.guarded
    assert report.reasons == ("self_check:resolver",)
    assert (await states(pool))["unverified"] == fleet.service_ids(0)
    assert checker.counts.guard_trips == 1


async def test_a_fetch_that_raises_is_a_failed_check(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    fleet: Fleet,
) -> None:
    await discover(service_map, session, fleet)

    async def broken(url: str) -> Fetched | Failed:
        raise RuntimeError("a bug in the fetch")

    store = LivenessStore(pool, Timing.of(INTERVAL))
    checker = Verifier(store, broken, VerifierOptions(worker_id="v1", guard_min_sample=100))
    report = await checker.run_once(now=await server_now(pool) + timedelta(seconds=1))
    assert (report.claimed, report.failed) == (FLEET, FLEET)
    assert checker.counts.checks == {"verify_error": FLEET}
    assert (await states(pool)) == {"suspect": fleet.service_ids(*range(FLEET))}


async def test_the_loop_checks_what_is_due_and_stops_when_asked(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    fleet: Fleet,
) -> None:
    await discover(service_map, session, fleet)
    checker = Verifier(
        LivenessStore(pool, Timing.of(INTERVAL)),
        fetcher(session),
        VerifierOptions(worker_id="v1", batch=5, fetch_timeout_s=3.0, idle_s=0.05),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(checker.run(stop))

    async def checked() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM service_liveness WHERE last_checked IS NOT NULL"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    everything = fleet.service_ids(*range(FLEET))
    for _ in range(600):  # a bound for a broken loop only; it takes a fraction of a second
        if await checked() == len(everything) or running.done():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, timeout=30)
    assert checker.counts.checks == {"answered": FLEET}  # each node once: batches of 5, 5, 2
    assert await states(pool) == {"alive": everything}

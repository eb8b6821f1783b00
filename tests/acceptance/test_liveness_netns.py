"""The live map over a real link that fails: beacons in a network namespace, reached over a veth,
behind packet filters set in that namespace (``tests/support/netns_fleet.py``).

- Every SYN dropped (a partition): no service goes ``gone``, all become ``unverified``, the guard
  trips once; the filter removed, every service is ``alive`` again at the next round.
- 10 % of packets dropped at random for many rounds: no service goes ``gone``.

The first two run the verifier in this process (``ronin.jobs.verifier``) with real fetches over
the link, the liveness clock driven through ``run_once(now=...)``, never slept on; the last
runs the partition through a real ``ronin worker`` verifying every second, with polling and a
bound on the overall wait only. Needs root (skipped otherwise); traffic goes only into the
namespace the test makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import aiohttp
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.beacon import demo_descriptor, descriptor_url
from ronin.discovery.http_probe import Fetched, fetch_descriptor, new_session
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.discovery.sightings import observe
from ronin.jobs.verifier import Verifier, VerifierOptions
from ronin.store.liveness import LivenessStore, Timing
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.acceptance.serve_support import environment
from tests.support import netns
from tests.support.netns import VethNamespace
from tests.support.netns_fleet import (
    SYN_RULE,
    add_rule,
    dropped,
    iptables_reason,
    loss_rule,
    namespace_beacons,
    remove_rule,
)

FLEET = 12
INTERVAL = timedelta(seconds=60)
RETRY = Timing.of(INTERVAL).retry
#: Rounds under the partition: well past the confirmation period (0.4 intervals).
PARTITION_ROUNDS = 4
#: Steps of a fifth of the interval under loss: 8 routine rounds and every retry between.
LOSS_STEPS = 40
LOSS = 0.1
#: A dropped SYN is sent again after 1 s: a check survives one loss, not a partition.
CONNECT_TIMEOUT_S = 1.5
TOTAL_TIMEOUT_S = 3.0
#: The worker's bound on every wait (a broken run only); polled, never asserted.
WORKER_WAIT_S = 90.0
POLL_S = 0.1


@pytest.fixture
def link() -> Iterator[VethNamespace]:
    """A namespace joined by a veth pair (skipped where that needs root or iptables)."""
    reason = netns.unavailable_reason() or iptables_reason()
    if reason:
        pytest.skip(reason)
    with netns.veth_namespace() as created:
        yield created


@pytest.fixture
async def ports(link: VethNamespace) -> AsyncIterator[list[int]]:
    async with namespace_beacons(link, FLEET) as served:
        yield served


@pytest.fixture
async def session(link: VethNamespace) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session(
        policy(link), concurrency=FLEET, connect_timeout_s=CONNECT_TIMEOUT_S
    ) as opened:
        yield opened


def policy(link: VethNamespace) -> ScopePolicy:
    return ScopePolicy(parse_networks(f"{link.inner_address}/32", field="RONIN_ALLOW"))


def verifier(
    pool: AsyncConnectionPool[Any], session: aiohttp.ClientSession, link: VethNamespace
) -> Verifier:
    fetch = partial(fetch_descriptor, session, policy=policy(link), total_timeout_s=TOTAL_TIMEOUT_S)
    options = VerifierOptions(worker_id="netns", fetch_timeout_s=TOTAL_TIMEOUT_S)
    return Verifier(LivenessStore(pool, Timing.of(INTERVAL)), fetch, options)


async def discover(
    service_map: ServiceMap, session: aiohttp.ClientSession, link: VethNamespace, ports: list[int]
) -> set[str]:
    """Put the namespace's beacons in the map as a crawl does; their service ids."""
    found: list[Sighting] = []
    for rank, port in enumerate(ports):
        url = descriptor_url(link.inner_address, port)
        fetched = await fetch_descriptor(session, url, policy(link), total_timeout_s=10.0)
        assert isinstance(fetched, Fetched), fetched
        found += observe(
            fetched,
            discovery_method="http_probe",
            job_id=uuid.uuid4(),
            rank=(0, 0, rank),
            seen_at=datetime.now().astimezone(),
        ).sightings
    await service_map.upsert(found)
    return {
        str(service["service_id"])
        for port in ports
        for service in demo_descriptor(link.inner_address, port)["services"]
    }


async def states(pool: AsyncConnectionPool[Any]) -> dict[str, set[str]]:
    """service_ids by state."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT state, service_id FROM service_liveness")
        ).fetchall()
    by_state: dict[str, set[str]] = {}
    for state, sid in rows:
        by_state.setdefault(state, set()).add(sid)
    return by_state


async def server_now(pool: AsyncConnectionPool[Any]) -> datetime:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


async def test_every_syn_dropped_makes_every_service_unverified_never_gone_then_it_heals(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    link: VethNamespace,
    ports: list[int],
) -> None:
    everything = await discover(service_map, session, link, ports)
    checker = verifier(pool, session, link)
    at = await server_now(pool) + timedelta(seconds=1)
    first = await checker.run_once(now=at)
    assert (first.claimed, first.failed) == (FLEET, 0)

    add_rule(link, SYN_RULE)
    for _ in range(PARTITION_ROUNDS):
        at += INTERVAL
        report = await checker.run_once(now=at)
        assert (report.claimed, report.failed, report.guarded) == (FLEET, FLEET, True)
        assert await states(pool) == {"unverified": everything}
    assert checker.counts.guard_trips == 1
    assert dropped(link) >= FLEET * PARTITION_ROUNDS
    assert set(checker.counts.checks) - {"answered"}, checker.counts.checks

    remove_rule(link, SYN_RULE)
    healed = await checker.run_once(now=at + INTERVAL)
    assert (healed.claimed, healed.failed, healed.guarded) == (FLEET, 0, False)
    assert await states(pool) == {"alive": everything}
    assert checker.counts.guard_trips == 1


async def test_ten_percent_packet_loss_for_many_rounds_makes_no_service_gone(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    link: VethNamespace,
    ports: list[int],
) -> None:
    everything = await discover(service_map, session, link, ports)
    checker = verifier(pool, session, link)
    at = await server_now(pool) + timedelta(seconds=1)
    await checker.run_once(now=at)

    rule = loss_rule(LOSS)
    add_rule(link, rule)
    claimed = 0
    for _ in range(LOSS_STEPS):
        at += RETRY
        claimed += (await checker.run_once(now=at)).claimed
        assert "gone" not in await states(pool)
    lost = dropped(link)
    remove_rule(link, rule)

    assert lost > 0  # the loss happened
    assert claimed >= FLEET * LOSS_STEPS // 5  # every node checked every round
    assert checker.counts.transitions[("suspect", "gone")] == 0
    at += INTERVAL
    await checker.run_once(now=at)
    assert await states(pool) == {"alive": everything}


async def until(
    condition: Callable[[], Awaitable[bool]], worker: asyncio.subprocess.Process
) -> bool:
    """Poll ``condition`` until it holds (True), the worker exits or the bound passes (False)."""
    deadline = asyncio.get_running_loop().time() + WORKER_WAIT_S
    while not await condition():
        if worker.returncode is not None or asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


@contextlib.asynccontextmanager
async def ronin_worker(db_url: str, link: VethNamespace, log: Any) -> AsyncIterator[Any]:
    """``ronin worker`` verifying every second, allowed the namespace's end of the link only."""
    worker = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ronin", "worker"),
        env=environment(
            RONIN_DATABASE_URL=db_url,
            RONIN_VERIFY_INTERVAL_S="1",
            RONIN_ALLOW=f"{link.inner_address}/32",
        ),
        stdout=log,
        stderr=log,
    )
    try:
        yield worker
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 30)
            except TimeoutError:
                worker.kill()
                await worker.wait()


@pytest.mark.slow
async def test_a_worker_keeps_every_service_unverified_while_every_syn_is_dropped(
    service_map: ServiceMap,
    pool: AsyncConnectionPool[Any],
    session: aiohttp.ClientSession,
    link: VethNamespace,
    ports: list[int],
    db_url: str,
    tmp_path: Any,
) -> None:
    everything = await discover(service_map, session, link, ports)
    log_path = tmp_path / "worker.log"

    async def checked() -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM node_checks WHERE last_answered_at IS NOT NULL"
            )
            row = await cur.fetchone()
        return row is not None and row[0] == FLEET

    async def claims() -> int:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT sum(round) FROM node_checks")).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def claimed_since(before: int, more: int) -> bool:
        return await claims() >= before + more

    async def every(state: str) -> bool:
        return await states(pool) == {state: everything}

    with log_path.open("wb") as log:
        async with ronin_worker(db_url, link, log) as worker:
            assert await until(checked, worker), log_path.read_text()
            add_rule(link, SYN_RULE)
            try:
                assert await until(partial(every, "unverified"), worker), await states(pool)
                held = await claims()  # three more rounds: well past the confirmation period
                assert await until(partial(claimed_since, held, 3 * FLEET), worker)
                assert await states(pool) == {"unverified": everything}
            finally:
                remove_rule(link, SYN_RULE)
            assert await until(partial(every, "alive"), worker), await states(pool)
    text = log_path.read_text()
    assert text.count("partition guard holds") == 1, text

"""The live map's store: state beside every service, node checks shared by claimers through
leases, results applied by the state machine, stale results ignored, retention.

Time is driven by passing ``now`` (offsets from the server's clock), never by sleeping.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ronin.store.liveness import (
    Answered,
    CheckFailed,
    LivenessStore,
    NodeCheck,
    Timing,
)
from ronin.store.liveness_rules import STATES
from ronin.store.migrate import load_migrations, migrate
from ronin.store.models import ServiceFilter, Sighting
from ronin.store.services import ServiceMap

INTERVAL = timedelta(seconds=60)
LEASE = timedelta(seconds=30)
WEEK = timedelta(days=7)

#: Map queries hide gone services by default; these tests read the whole map.
EVERY_STATE = ServiceFilter(states=STATES)


def node_id(n: int) -> str:
    return f"did:kos:griot:n{n}"


def service_id(n: int, s: int) -> str:
    return f"did:kos:service:n{n}:s{s}"


def url(n: int, port: int = 30437) -> str:
    return f"http://127.0.0.{n + 1}:{port}/.well-known/kos-node"


def sightings(
    n: int, services: int = 1, *, port: int = 30437, endpoint: str = ""
) -> list[Sighting]:
    """The services of node ``n``, seen now at its descriptor URL."""
    return [
        Sighting(
            service_id=service_id(n, s),
            node_id=node_id(n),
            node_class="Griot",
            endpoint=endpoint or f"http://127.0.0.{n + 1}:{port}/s{s}",
            capabilities=("node_status",),
            seen_at=datetime.now().astimezone(),
            metadata={"discovery_method": "http_probe", "descriptor_url": url(n, port)},
        )
        for s in range(services)
    ]


async def server_now(pool: AsyncConnectionPool[Any]) -> datetime:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def liveness_store(pool: AsyncConnectionPool[Any]) -> LivenessStore:
    return LivenessStore(pool, Timing.of(INTERVAL))


async def states(store: LivenessStore, *ids: str) -> dict[str, str]:
    return {sid: row.state for sid, row in (await store.liveness_of(ids)).items()}


async def claim_one(store: LivenessStore, at: datetime, worker: str = "w1") -> NodeCheck:
    claimed = await store.claim_due(worker, 10, LEASE, now=at)
    assert len(claimed) == 1, claimed
    return claimed[0]


def answered(check: NodeCheck, *listed: str) -> Answered:
    return Answered(check, check.url, frozenset(listed))


# -- the rows beside the map -------------------------------------------------------------------


async def test_existing_services_are_backfilled_alive_with_their_nodes_due(
    fresh_database: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE ronin_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
            "NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for migration in load_migrations():
            if migration.version < 4:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO ronin_schema_migrations (version, name, checksum) "
                    "VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
        await conn.execute(
            """INSERT INTO discovered_services
                   (service_id, node_id, node_class, endpoint, discovery_metadata, last_seen)
               VALUES ('did:kos:s:1', 'did:kos:n:1', 'Griot', 'http://10.0.0.1:30437/klf',
                       '{"descriptor_url": "http://10.0.0.1:30437/.well-known/kos-node"}',
                       now()),
                      ('did:kos:s:2', 'did:kos:n:1', 'Griot', 'http://10.0.0.1:30437/b',
                       '{}', now() - interval '1 hour'),
                      ('did:kos:s:3', 'did:kos:n:2', 'Musa', 'wss://10.0.0.2:8443/live?x=1',
                       NULL, now())"""
        )
        applied = await migrate(conn)
        assert [m.version for m in applied] == [
            m.version for m in load_migrations() if m.version >= 4
        ]
        cur = await conn.execute(
            "SELECT service_id, state, misses FROM service_liveness ORDER BY 1"
        )
        assert await cur.fetchall() == [
            ("did:kos:s:1", "alive", 0),
            ("did:kos:s:2", "alive", 0),
            ("did:kos:s:3", "alive", 0),
        ]
        cur = await conn.execute(
            "SELECT node_id, descriptor_url, next_check_at BETWEEN now() "
            "AND now() + interval '1 minute', round FROM node_checks ORDER BY 1"
        )
        assert await cur.fetchall() == [
            ("did:kos:n:1", "http://10.0.0.1:30437/.well-known/kos-node", True, 0),
            ("did:kos:n:2", "https://10.0.0.2:8443/.well-known/kos-node", True, 0),
        ]


async def test_an_upserted_service_gets_its_liveness_and_its_node_check(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1, services=2))
    assert await states(store, service_id(1, 0), service_id(1, 1)) == {
        service_id(1, 0): "alive",
        service_id(1, 1): "alive",
    }
    # The node's check row is requested, and made by the next claim: due at once.
    assert await store.node_check(node_id(1)) is None
    check = await claim_one(store, await server_now(pool))
    assert check == NodeCheck(node_id(1), url(1), (service_id(1, 0), service_id(1, 1)), 1)
    row = await store.node_check(node_id(1))
    assert row is not None
    assert row["lease_holder"] == "w1"


async def test_a_resighting_makes_a_gone_service_alive_and_refreshes_its_node(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1))
    now = await server_now(pool)
    check = await claim_one(store, now)
    await store.record("w1", [answered(check)], now=now)  # answered without it: gone
    assert await states(store, service_id(1, 0)) == {service_id(1, 0): "gone"}
    parked = await store.claim_due("w1", 10, LEASE, now=now + 2 * INTERVAL)
    assert parked == []  # every service of the node is gone: not checked again
    assert (await store.node_check(node_id(1)) or {})["parked"] is True

    await service_map.upsert(sightings(1, port=30999))  # seen again, elsewhere
    assert await states(store, service_id(1, 0)) == {service_id(1, 0): "alive"}
    again = await claim_one(store, await server_now(pool))  # woken: due at once
    assert again.url == url(1, 30999)
    row = await store.node_check(node_id(1))
    assert row is not None
    assert row["descriptor_url"] == url(1, 30999)
    assert row["parked"] is False


async def test_removed_services_take_their_rows_with_them(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    await service_map.upsert(sightings(1, services=2) + sightings(2))
    await liveness_store(pool).claim_due("w1", 10, LEASE)  # makes the nodes' check rows
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM discovered_services WHERE service_id = %s", (service_id(1, 0),))
        assert conn.execute("SELECT count(*) FROM node_checks").fetchone() == (2,)
        conn.execute("DELETE FROM discovered_services WHERE node_id = %s", (node_id(1),))
        assert conn.execute("SELECT service_id FROM service_liveness").fetchall() == [
            (service_id(2, 0),)
        ]
        assert conn.execute("SELECT node_id FROM node_checks").fetchall() == [(node_id(2),)]


# -- claiming --------------------------------------------------------------------------------


async def test_claimers_never_get_the_same_node_in_a_round(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    store = liveness_store(pool)
    await service_map.upsert([s for n in range(40) for s in sightings(n)])
    now = await server_now(pool)
    # A claimer mid-statement holds its rows locked: the others skip them, not wait.
    with psycopg.connect(db_url) as holder:
        held = holder.execute(
            "SELECT node_id FROM node_checks ORDER BY node_id LIMIT 5 FOR UPDATE"
        ).fetchall()
        claims = await asyncio.gather(
            *(store.claim_due(f"w{i}", 4, LEASE, now=now) for i in range(6))
        )
        holder.rollback()
    claimed = [check.node_id for batch in claims for check in batch]
    assert len(claimed) == len(set(claimed)) == 24
    assert not {row[0] for row in held} & set(claimed)
    rest = await store.claim_due("w9", 100, LEASE, now=now)
    assert sorted(c.node_id for c in rest) == sorted({node_id(n) for n in range(40)} - set(claimed))
    assert await store.claim_due("w10", 100, LEASE, now=now) == []


async def test_a_dead_claimers_lease_lapses_and_its_node_is_claimed_again(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1, services=2))
    now = await server_now(pool)
    first = await claim_one(store, now, "dead")
    assert first.service_ids == (service_id(1, 0), service_id(1, 1))
    assert await store.claim_due("w2", 10, LEASE, now=now + LEASE / 2) == []
    second = await claim_one(store, now + LEASE + timedelta(seconds=1), "w2")
    assert second.node_id == first.node_id
    assert second.round == first.round + 1
    recorded = await store.record("w2", [answered(second, *second.service_ids)], now=now + LEASE)
    assert recorded.accepted == 1


# -- results ---------------------------------------------------------------------------------


async def test_an_answer_without_a_service_makes_that_one_gone_and_its_siblings_alive(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1, services=3))
    now = await server_now(pool) + timedelta(seconds=5)
    check = await claim_one(store, now)
    recorded = await store.record(
        "w1", [answered(check, service_id(1, 0), service_id(1, 2), "did:kos:service:new")], now=now
    )
    assert recorded.accepted == 1
    assert recorded.seen == 2
    assert recorded.transitions == {("alive", "gone"): 1}
    assert await states(store, *(service_id(1, s) for s in range(3))) == {
        service_id(1, 0): "alive",
        service_id(1, 1): "gone",
        service_id(1, 2): "alive",
    }
    seen = {s.service_id: s.last_seen for s in (await service_map.find(EVERY_STATE)).items}
    assert seen[service_id(1, 0)] == seen[service_id(1, 2)] == now
    assert seen[service_id(1, 1)] < now
    row = await store.node_check(node_id(1))
    assert row is not None
    assert row["next_check_at"] == now + INTERVAL
    assert row["lease_holder"] is None


async def test_failures_make_suspect_then_gone_after_the_confirmation_period(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    timing = store.timing
    await service_map.upsert(sightings(1, services=2))
    start = await server_now(pool) + timedelta(seconds=1)
    failed_at = []
    at = start
    while True:
        check = await claim_one(store, at)
        await store.record("w1", [CheckFailed(check, "refused")], now=at)
        failed_at.append(at)
        rows = await store.liveness_of(check.service_ids)
        if {row.state for row in rows.values()} != {"suspect"}:
            break
        assert all(row.state_since == start for row in rows.values())
        row = await store.node_check(node_id(1))
        assert row is not None
        assert row["next_check_at"] == at + timing.retry
        at = row["next_check_at"]
    assert {row.state for row in rows.values()} == {"gone"}
    assert failed_at[-1] - start >= timing.confirm
    assert failed_at[-1] - start < timing.confirm + timing.retry
    assert {row.misses for row in rows.values()} == {len(failed_at)}
    assert failed_at[-1] - start <= 2 * INTERVAL  # the protocol's bound
    # Every service of the node is gone: it is parked, not checked for ever.
    assert await store.claim_due("w1", 10, LEASE, now=at + 10 * INTERVAL) == []


async def test_the_guard_makes_failures_unverified_never_gone_and_success_heals(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1) + sightings(2))
    at = await server_now(pool) + timedelta(seconds=1)
    checks = await store.claim_due("w1", 10, LEASE, now=at)
    # node 2 was already suspect when the partition began
    by_node = {c.node_id: c for c in checks}
    await store.record(
        "w1",
        [
            CheckFailed(by_node[node_id(2)], "timeout"),
            answered(by_node[node_id(1)], service_id(1, 0)),
        ],
        now=at,
    )
    assert await states(store, service_id(1, 0), service_id(2, 0)) == {
        service_id(1, 0): "alive",
        service_id(2, 0): "suspect",
    }
    at += INTERVAL - store.timing.retry
    for step in range(10):  # long past the confirmation period
        at += store.timing.retry if step == 0 else INTERVAL  # checked once an interval
        checks = await store.claim_due("w1", 10, LEASE, now=at)
        assert len(checks) == 2
        recorded = await store.record(
            "w1", [CheckFailed(c, "timeout") for c in checks], guarded=True, now=at
        )
        assert recorded.accepted == 2
    assert await states(store, service_id(1, 0), service_id(2, 0)) == {
        service_id(1, 0): "unverified",
        service_id(2, 0): "unverified",
    }
    assert await store.claim_due("w1", 10, LEASE, now=at + INTERVAL / 2) == []
    at += INTERVAL
    checks = await store.claim_due("w1", 10, LEASE, now=at)
    await store.record("w1", [answered(c, *c.service_ids) for c in checks], now=at)
    assert await states(store, service_id(1, 0), service_id(2, 0)) == {
        service_id(1, 0): "alive",
        service_id(2, 0): "alive",
    }


async def test_unverified_failing_once_the_guard_is_off_starts_its_confirmation_anew(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1))
    at = await server_now(pool) + timedelta(seconds=1)
    check = await claim_one(store, at)
    await store.record("w1", [CheckFailed(check, "timeout")], guarded=True, now=at)
    at += INTERVAL  # unverified for long
    check = await claim_one(store, at)
    await store.record("w1", [CheckFailed(check, "timeout")], now=at)
    rows = await store.liveness_of([service_id(1, 0)])
    assert rows[service_id(1, 0)].state == "suspect"
    assert rows[service_id(1, 0)].state_since == at


async def test_a_stale_result_is_ignored_and_a_dead_node_never_comes_back_alive(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1))
    at = await server_now(pool) + timedelta(seconds=1)
    slow = await claim_one(store, at, "slow")  # fetches while the node is still up
    at += LEASE + timedelta(seconds=1)
    while (await states(store, service_id(1, 0)))[service_id(1, 0)] != "gone":
        check = await claim_one(store, at, "w2")
        await store.record("w2", [CheckFailed(check, "refused")], now=at)
        at += store.timing.retry
    late = await store.record("slow", [answered(slow, service_id(1, 0))], now=at)
    assert late.accepted == 0
    assert late.seen == 0
    assert not late.transitions
    assert await states(store, service_id(1, 0)) == {service_id(1, 0): "gone"}

    # The same worker's result of an earlier round is stale too.
    await service_map.upsert(sightings(2))
    at = await server_now(pool) + timedelta(seconds=1)
    old = await claim_one(store, at, "w3")
    new = await claim_one(store, at + LEASE + timedelta(seconds=1), "w3")
    assert (await store.record("w3", [CheckFailed(old, "refused")], now=at + LEASE)).accepted == 0
    assert (await store.record("w3", [answered(new, service_id(2, 0))], now=at)).accepted == 1


# -- retention -------------------------------------------------------------------------------


async def test_prune_removes_services_gone_for_longer_than_the_retention(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1, services=3) + sightings(2) + sightings(3))
    at = await server_now(pool) + timedelta(seconds=1)
    checks = {c.node_id: c for c in await store.claim_due("w1", 10, LEASE, now=at)}
    await store.record(
        "w1",
        [answered(checks[node_id(1)], service_id(1, 0)), answered(checks[node_id(2)])],
        now=at,
    )
    later = at + WEEK / 2
    checks = {c.node_id: c for c in await store.claim_due("w1", 10, LEASE, now=later)}
    await store.record("w1", [answered(checks[node_id(3)])], now=later)
    assert await store.counts_by_state() == {"alive": 1, "suspect": 0, "gone": 4, "unverified": 0}

    removed = await store.prune_gone(WEEK, now=at + WEEK + timedelta(seconds=1), batch=2)
    assert removed == 3
    assert await store.counts_by_state() == {"alive": 1, "suspect": 0, "gone": 1, "unverified": 0}
    assert {s.service_id for s in (await service_map.find(EVERY_STATE)).items} == {
        service_id(1, 0),
        service_id(3, 0),
    }
    assert await store.node_check(node_id(2)) is None  # no service left: no check
    assert await store.node_check(node_id(1)) is not None


# -- concurrency -----------------------------------------------------------------------------


async def test_map_writes_and_checks_at_once_neither_fail_nor_lose_a_row(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    store = liveness_store(pool)
    nodes = range(30)
    await service_map.upsert([s for n in nodes for s in sightings(n, services=4)])
    start = await server_now(pool) + timedelta(seconds=1)

    async def write(writer: int) -> None:
        for sweep in range(3):
            batch = [s for n in nodes for s in sightings(n, services=4, port=30437 + sweep)]
            random.Random(writer * 10 + sweep).shuffle(batch)
            await service_map.upsert(batch, batch_size=10)

    async def check(worker: str) -> None:
        at = start
        for step in range(12):
            checks = await store.claim_due(worker, 7, LEASE, now=at)
            results: list[Answered | CheckFailed] = [
                CheckFailed(c, "refused") if (step + i) % 3 else answered(c, *c.service_ids[1:])
                for i, c in enumerate(checks)
            ]
            await store.record(worker, results, now=at)
            at += store.timing.retry

    await asyncio.gather(*(write(w) for w in range(4)), check("w1"), check("w2"))
    with psycopg.connect(db_url) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM discovered_services AS s WHERE NOT EXISTS "
            "(SELECT FROM service_liveness AS l WHERE l.service_id = s.service_id)"
        ).fetchone()
    assert orphans == (0,)
    await store.claim_due("w3", 1, LEASE)  # applies what the sightings asked
    rows = [await store.node_check(node_id(n)) for n in nodes]
    assert all(row is not None for row in rows)


async def test_a_service_sighted_after_the_claim_is_not_judged_by_that_check(
    service_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    store = liveness_store(pool)
    await service_map.upsert(sightings(1))
    at = await server_now(pool) + timedelta(seconds=1)
    check = await claim_one(store, at)
    await service_map.upsert(sightings(1, services=2))  # a second service, found meanwhile
    recorded = await store.record("w1", [answered(check, service_id(1, 0))], now=at)
    assert recorded.transitions == {}
    assert await states(store, service_id(1, 0), service_id(1, 1)) == {
        service_id(1, 0): "alive",
        service_id(1, 1): "alive",
    }

"""The map: batched upserts of sightings, keyset queries, bounded counts and pruning."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import args_row, dict_row
from psycopg_pool import AsyncConnectionPool

from ronin.errors import InvalidValue
from ronin.store import dumps
from ronin.store.claims import CLAIM_KEY, Claim, Held, Settled, settle
from ronin.store.cursor import decode_cursor, encode_cursor
from ronin.store.database import pooled_connection
from ronin.store.liveness_rules import STATES, State
from ronin.store.models import (
    ClassSummary,
    Count,
    MapSummary,
    Node,
    NodePage,
    Page,
    Service,
    ServiceFilter,
    Sighting,
    UpsertResult,
    checked_states,
)
from ronin.store.queries import query

UPSERT_BATCH_SIZE = 2_000
MAX_PAGE_SIZE = 1_000
MAX_NODE_PAGE_SIZE = 100
DEFAULT_COUNT_BOUND = 10_000
# An all-of search walks its rarest capability; counting holders up to this bound is enough
# to tell rare from common without a full count.
DRIVER_SAMPLE_BOUND = 1_000
FREQUENCIES_TTL_S = 60.0

EVERY_SERVICE = ServiceFilter()
SERVICE_ROW = args_row(Service)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class ServiceMap:
    """Ronin's live map of services, on ``discovered_services``."""

    def __init__(self, pool: Pool, *, freshness_window: timedelta) -> None:
        self._pool = pool
        self.freshness_window = freshness_window
        self._frequencies_cache: dict[str, int] = {}
        self._frequencies_expire = 0.0
        from ronin.store.links import PeerLinks  # it reads the change feed, which reads this

        #: The peer links between the map's nodes (migration 0006).
        self.links = PeerLinks(pool)

    async def upsert(
        self, sightings: Iterable[Sighting], *, batch_size: int = UPSERT_BATCH_SIZE
    ) -> UpsertResult:
        """Write sightings in batches, each batch in its own transaction.

        Who owns a ``service_id`` several sightings claim is settled by ``claims.settle``: the
        map's owner until its row goes stale, else the earliest-ranked claim of a job; every
        claim that lost is a conflict.
        """
        result = UpsertResult()
        batch: list[Sighting] = []
        for sighting in sightings:
            batch.append(sighting)
            if len(batch) >= batch_size:
                result.merge(await self._upsert_batch(batch))
                batch = []
        if batch:
            result.merge(await self._upsert_batch(batch))
        return result

    async def _upsert_batch(self, batch: Sequence[Sighting]) -> UpsertResult:
        """Settle a batch; claims of rows another transaction inserted meanwhile are settled
        again in a transaction of their own (one that takes no lock after inserting)."""
        result = UpsertResult()
        pending = list(batch)
        while pending:
            async with self._connection() as conn, conn.transaction():
                pending = await self._settle(conn, pending, result)
        return result

    async def _settle(
        self, conn: psycopg.AsyncConnection[Any], batch: list[Sighting], result: UpsertResult
    ) -> list[Sighting]:
        """Lock the rows the batch claims, settle each ``service_id``, write what changed;
        the sightings to settle again (their row appeared since the lock)."""
        claims: dict[str, list[Sighting]] = {}
        for sighting in batch:
            claims.setdefault(sighting.service_id, []).append(sighting)
        ids = sorted(claims)
        cur = await conn.execute(
            query("lock_services"),
            {"service_ids": ids, "freshness_window": self.freshness_window},
            prepare=False,
        )
        held = {
            row[0]: Held(row[1], row[2], row[4], Claim.from_json(row[3]))
            for row in await cur.fetchall()
        }
        settled = [settle(sid, held.get(sid), claims[sid]) for sid in ids]
        inserts = [s for s in settled if s.write is not None and s.new]
        updates = [s for s in settled if s.write is not None and not s.new]
        inserted = await self._write(conn, "insert_services", inserts)
        await self._write(conn, "update_services", updates)
        again: list[Sighting] = []
        for one in settled:
            if one.new and one.service_id not in inserted:
                again += claims[one.service_id]
            else:
                _report(one, result)
        return again

    async def _write(
        self, conn: psycopg.AsyncConnection[Any], name: str, rows: list[Settled]
    ) -> set[str]:
        """One statement writing every settled row; the service_ids it returned."""
        if not rows:
            return set()
        written = [(row.write, row.claim) for row in rows if row.write is not None]
        params = {
            "service_ids": [s.service_id for s, _ in written],
            "node_ids": [s.node_id for s, _ in written],
            "node_classes": [s.node_class for s, _ in written],
            "endpoints": [s.endpoint for s, _ in written],
            "capabilities": [dumps(list(dict.fromkeys(s.capabilities))) for s, _ in written],
            "metadata": [dumps(_metadata(s, claim)) for s, claim in written],
            "seen_at": [s.seen_at for s, _ in written],
        }
        cur = await conn.execute(query(name), params, prepare=False)
        return {row[0] for row in await cur.fetchall()} if cur.description else set()

    async def record_links(self, job_id: str, links: Iterable[tuple[str, str]]) -> int:
        """Write a job's peer links (referrer node_id, peer node_id); how many were written."""
        return await self.links.record(job_id, links)

    async def get(self, service_id: str) -> Service | None:
        """One service, or None."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("get_service"), {"service_id": service_id})
            row = await cur.fetchone()
        return Service(**row) if row else None

    async def find(
        self, where: ServiceFilter = EVERY_SERVICE, *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """One keyset page of the services matching ``where``, in ``service_id`` order."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidValue(f"limit must be from 1 to {MAX_PAGE_SIZE}", field="limit")
        after = decode_cursor(cursor) if cursor is not None else None
        async with self._connection() as conn:
            statement, params = await self._page_query(conn, where, after, limit)
            # Rows straight into Service, by position (the page queries select its fields in
            # order): a dict per row, then keywords, cost a third of the decoding.
            cur = conn.cursor(row_factory=SERVICE_ROW)
            await cur.execute(statement, params, prepare=False)
            items = await cur.fetchall()
        next_cursor = encode_cursor(items[-1].service_id) if len(items) == limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def count(
        self, where: ServiceFilter = EVERY_SERVICE, *, bound: int = DEFAULT_COUNT_BOUND
    ) -> Count:
        """How many services match, counted exactly up to ``bound`` and no further."""
        async with self._connection() as conn:
            statement, params = await self._page_query(conn, where, None, bound + 1)
            counted = sql.SQL("SELECT count(*) FROM ({}) AS hits").format(statement)
            cur = await conn.execute(counted, params, prepare=False)
            row = await cur.fetchone()
        value = int(row[0]) if row else 0
        return Count(value=min(value, bound), exact=value <= bound)

    async def plan(
        self, where: ServiceFilter = EVERY_SERVICE, *, limit: int = 100, timing: bool = True
    ) -> list[str]:
        """EXPLAIN ANALYZE of the first page for ``where``: what an operator (or a benchmark)
        reads to see how a query is served. ``timing=False``: no time per plan node, whose
        clock readings inflate the total of a plan of many short loops."""
        explain = sql.SQL(
            "EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) {}"
            if timing
            else "EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF, BUFFERS OFF) {}"
        )
        async with self._connection() as conn:
            statement, params = await self._page_query(conn, where, None, limit)
            cur = await conn.execute(explain.format(statement), params, prepare=False)
            return [str(row[0]) for row in await cur.fetchall()]

    async def nodes(
        self,
        *,
        node_class: str | None = None,
        states: Sequence[str] = (),
        limit: int = 100,
        cursor: str | None = None,
    ) -> NodePage:
        """A keyset page of nodes in ``node_id`` order, each with its services in ``states``
        (by default all but gone); a node with none of those is left out."""
        if not 1 <= limit <= MAX_NODE_PAGE_SIZE:
            raise InvalidValue(f"limit must be from 1 to {MAX_NODE_PAGE_SIZE}", field="limit")
        where = ServiceFilter(node_class=node_class, states=checked_states(states))
        after = decode_cursor(cursor) if cursor is not None else None
        params = {
            "after": after,
            "node_class": where.node_class,  # checked, canonical
            "states": where.wanted_states,
            "limit": limit,
        }
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("nodes_page"), params)
            services = [Service(**row) for row in await cur.fetchall()]
        items: list[Node] = []
        for service in services:
            if not items or items[-1].node_id != service.node_id:
                items.append(Node(service.node_id, service.node_class, service.last_seen, []))
            node = items[-1]
            node.services.append(service)
            if service.last_seen > node.last_seen:
                items[-1] = Node(node.node_id, service.node_class, service.last_seen, node.services)
        next_cursor = encode_cursor(items[-1].node_id) if len(items) == limit else None
        return NodePage(items=items, next_cursor=next_cursor)

    async def total(self) -> int:
        """Every service in the map (an exact count: a full scan)."""
        async with self._connection() as conn:
            cur = await conn.execute(query("count_services"))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def summary(self) -> MapSummary:
        """Services, nodes and latest sighting per class, and services per state: full scans,
        for operators."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("summary_by_class"))
            classes = [ClassSummary(**row) for row in await cur.fetchall()]
            states = await _counts_by_state(conn)
        return MapSummary(classes=classes, states=states)

    async def counts_by_state(self) -> dict[State, int]:
        """Services per state, every state present; one without a liveness row is alive."""
        async with self._connection() as conn:
            return await _counts_by_state(conn)

    async def prune(self, *, not_seen_for: timedelta, now: datetime | None = None) -> int:
        """Delete services not seen for ``not_seen_for``, and the peer links not seen for as
        long; return how many services went (their nodes' links go with them, by trigger)."""
        if not_seen_for <= timedelta(0):
            raise InvalidValue("not_seen_for must be positive", field="not_seen_for")
        async with self._connection() as conn:
            cutoff = (now or await _server_now(conn)) - not_seen_for
            cur = await conn.execute(query("prune_services"), {"cutoff": cutoff})
            removed = cur.rowcount
            await conn.execute(query("prune_links"), {"cutoff": cutoff})
            return removed

    async def _page_query(
        self,
        conn: psycopg.AsyncConnection[Any],
        where: ServiceFilter,
        after: str | None,
        limit: int,
    ) -> tuple[sql.SQL, dict[str, Any]]:
        params: dict[str, Any] = {
            "node_class": where.node_class,
            "node_id": where.node_id,
            "seen_since": where.seen_since,
            "states": where.wanted_states,
            "after": after,
            "limit": limit,
        }
        required = list(dict.fromkeys(where.all_capabilities))
        if where.any_capabilities:
            params["drivers"] = list(dict.fromkeys(where.any_capabilities))
            params["also_required"] = required
        elif required:
            driver = await self._rarest(conn, required)
            params["drivers"] = [driver]
            params["also_required"] = [c for c in required if c != driver]
        else:
            return query("find_services"), params
        return query("find_services_by_capability"), params

    async def _rarest(self, conn: psycopg.AsyncConnection[Any], capabilities: Sequence[str]) -> str:
        """The capability fewest services hold, to drive an all-of search.

        Common capabilities are known from the planner's statistics (cached for a minute: they
        change only when the table is analysed); one the statistics do not list is rarer than
        all those they do. Only when several are unlisted are their holders counted, up to a
        small bound.
        """
        if len(capabilities) == 1:
            return capabilities[0]
        frequencies = await self._frequencies(conn)
        unknown = [c for c in capabilities if c not in frequencies]
        if len(unknown) == 1:
            return unknown[0]
        if unknown:
            cur = await conn.execute(
                query("capability_holders_sampled"),
                {"capabilities": unknown, "bound": DRIVER_SAMPLE_BOUND},
            )
            sampled = {name: count for name, count in await cur.fetchall()}
            return min(unknown, key=lambda name: sampled.get(name, 0))
        return min(capabilities, key=lambda name: frequencies[name])

    async def _frequencies(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
        now = time.monotonic()
        if now >= self._frequencies_expire:
            cur = await conn.execute(query("capability_frequencies"))
            self._frequencies_cache = {name: int(count) for name, count in await cur.fetchall()}
            self._frequencies_expire = now + FREQUENCIES_TTL_S
        return self._frequencies_cache

    def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return pooled_connection(self._pool)


async def _counts_by_state(conn: psycopg.AsyncConnection[Any]) -> dict[State, int]:
    cur = await conn.execute(query("count_services_by_state"))
    found = {str(state): int(n) for state, n in await cur.fetchall()}
    return {state: found.get(state, 0) for state in STATES}


async def _server_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _metadata(sighting: Sighting, claim: Claim | None) -> dict[str, Any]:
    """The sighting's metadata, with ``first_seen`` set to this sighting when absent, and the
    row's job claim (only the store writes that key)."""
    metadata = dict(sighting.metadata)
    metadata.setdefault("first_seen", sighting.seen_at.isoformat())
    metadata.pop(CLAIM_KEY, None)
    if claim is not None:
        metadata[CLAIM_KEY] = claim.to_json()
    return metadata


def _report(settled: Settled, result: UpsertResult) -> None:
    """Add one settled ``service_id`` to the batch's result."""
    if settled.outcome is not None:
        getattr(result, settled.outcome).append(settled.service_id)
    result.conflicts += settled.conflicts

"""The map: batched upserts of sightings, keyset queries, bounded counts and pruning."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ronin.errors import InvalidValue
from ronin.store import dumps
from ronin.store.cursor import decode_cursor, encode_cursor
from ronin.store.database import pooled_connection
from ronin.store.models import (
    ClassSummary,
    Conflict,
    Count,
    MapSummary,
    Node,
    NodePage,
    Page,
    Service,
    ServiceFilter,
    Sighting,
    UpsertResult,
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

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class ServiceMap:
    """Ronin's live map of services, on ``discovered_services``."""

    def __init__(self, pool: Pool, *, freshness_window: timedelta) -> None:
        self._pool = pool
        self.freshness_window = freshness_window
        self._frequencies_cache: dict[str, int] = {}
        self._frequencies_expire = 0.0

    async def upsert(
        self, sightings: Iterable[Sighting], *, batch_size: int = UPSERT_BATCH_SIZE
    ) -> UpsertResult:
        """Write sightings in batches, each batch one statement in its own transaction.

        Within a batch the latest sighting of a ``service_id`` wins, and rows are sent in
        ``service_id`` order so that concurrent batches lock rows in the same order and
        cannot deadlock.
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
        latest: dict[str, Sighting] = {}
        for sighting in batch:
            held = latest.get(sighting.service_id)
            if held is None or held.seen_at <= sighting.seen_at:
                latest[sighting.service_id] = sighting
        rows = [latest[key] for key in sorted(latest)]
        params = {
            "service_ids": [s.service_id for s in rows],
            "node_ids": [s.node_id for s in rows],
            "node_classes": [s.node_class for s in rows],
            "endpoints": [s.endpoint for s in rows],
            "capabilities": [dumps(list(dict.fromkeys(s.capabilities))) for s in rows],
            "metadata": [dumps(_metadata(s)) for s in rows],
            "seen_at": [s.seen_at for s in rows],
            "freshness_window": self.freshness_window,
        }
        result = UpsertResult()
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(query("upsert_sightings"), params, prepare=False)
            written = set()
            for service_id, inserted in await cur.fetchall():
                written.add(service_id)
                (result.inserted if inserted else result.refreshed).append(service_id)
            unwritten = [s for s in rows if s.service_id not in written]
            if unwritten:
                await self._explain_unwritten(conn, unwritten, result)
        return result

    async def _explain_unwritten(
        self, conn: psycopg.AsyncConnection[Any], rows: list[Sighting], result: UpsertResult
    ) -> None:
        """Sort sightings the upsert skipped into conflicts and outdated sightings."""
        cur = await conn.execute(
            query("current_owners"), {"service_ids": [s.service_id for s in rows]}
        )
        owners = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
        for sighting in rows:
            owner, owner_last_seen = owners[sighting.service_id]
            if owner == sighting.node_id:
                result.outdated.append(sighting.service_id)
            else:
                result.conflicts.append(
                    Conflict(sighting.service_id, sighting.node_id, owner, owner_last_seen)
                )

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
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(statement, params, prepare=False)
            items = [Service(**row) for row in await cur.fetchall()]
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

    async def plan(self, where: ServiceFilter = EVERY_SERVICE, *, limit: int = 100) -> list[str]:
        """EXPLAIN ANALYZE of the first page for ``where``: what an operator (or a benchmark)
        reads to see how a query is served."""
        async with self._connection() as conn:
            statement, params = await self._page_query(conn, where, None, limit)
            explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) {}").format(statement)
            cur = await conn.execute(explain, params, prepare=False)
            return [str(row[0]) for row in await cur.fetchall()]

    async def nodes(
        self, *, node_class: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> NodePage:
        """A keyset page of nodes in ``node_id`` order, each with its services."""
        if not 1 <= limit <= MAX_NODE_PAGE_SIZE:
            raise InvalidValue(f"limit must be from 1 to {MAX_NODE_PAGE_SIZE}", field="limit")
        ServiceFilter(node_class=node_class)  # validates it
        after = decode_cursor(cursor) if cursor is not None else None
        params = {"after": after, "node_class": node_class, "limit": limit}
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
        """Services, nodes and latest sighting per class: a full scan, for operators."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("summary_by_class"))
            classes = [ClassSummary(**row) for row in await cur.fetchall()]
        return MapSummary(classes=classes)

    async def prune(self, *, not_seen_for: timedelta, now: datetime | None = None) -> int:
        """Delete services not seen for ``not_seen_for``; return how many went."""
        if not_seen_for <= timedelta(0):
            raise InvalidValue("not_seen_for must be positive", field="not_seen_for")
        async with self._connection() as conn:
            cutoff = (now or await _server_now(conn)) - not_seen_for
            cur = await conn.execute(query("prune_services"), {"cutoff": cutoff})
            return cur.rowcount

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


async def _server_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _metadata(sighting: Sighting) -> dict[str, Any]:
    """The sighting's metadata, with ``first_seen`` set to this sighting when absent."""
    metadata = dict(sighting.metadata)
    metadata.setdefault("first_seen", sighting.seen_at.isoformat())
    return metadata

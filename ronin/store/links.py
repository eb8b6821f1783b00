"""Peer links (who named whom as a peer, from which job) and the graph the dashboard draws.

Links are written by discovery beside its services, best effort: a batch of links follows
the batch of services it belongs to, and a failure to write them loses links, never
services. The graph is read in one REPEATABLE READ snapshot together with the change feed's
head, so a page that draws it and then follows ``/v1/changes/stream?since=cursor`` misses
nothing and sees nothing twice. Positions come from ``ronin.store.layout``: a node without
one is placed by the first request that returns it, and stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ronin.errors import InvalidValue
from ronin.store.changes import format_cursor
from ronin.store.database import pooled_connection
from ronin.store.layout import NewNode, Position, place
from ronin.store.liveness_rules import STATES, State
from ronin.store.models import canonical_class, checked_states
from ronin.store.queries import query
from ronin.store.storable import check_text

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
#: A node's state is the best of its services', in this order (index: the SQL's rank).
STATE_ORDER: tuple[State, ...] = ("alive", "suspect", "unverified", "gone")
MAX_IDS = 200
MAX_HISTORY = 100


@dataclass(frozen=True, slots=True)
class GraphFilter:
    """Which nodes a graph shows: of a class, in one of ``states``, holding every capability
    (over all the node's services). Links are those between the nodes shown."""

    node_class: str | None = None
    states: tuple[State, ...] = ()
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for capability in self.capabilities:
            check_text(capability, "capability")
        if self.node_class is not None:
            check_text(self.node_class, "node_class")
            object.__setattr__(self, "node_class", canonical_class(self.node_class))
        object.__setattr__(self, "states", checked_states(self.states))
        object.__setattr__(self, "capabilities", tuple(dict.fromkeys(self.capabilities)))


EVERY_NODE = GraphFilter()


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """One link of a node, seen from it: the node at its other end."""

    node_id: str
    first_seen: datetime
    last_seen: datetime
    job_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "first_seen": timestamp(self.first_seen),
            "last_seen": timestamp(self.last_seen),
            "job_id": self.job_id,
        }


@dataclass(frozen=True, slots=True)
class StateChange:
    """One state change of one of a node's services (from the change feed)."""

    cursor: str
    at: datetime
    service_id: str
    from_state: str | None
    to_state: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "at": timestamp(self.at),
            "service_id": self.service_id,
            "from": self.from_state,
            "to": self.to_state,
        }


@dataclass(frozen=True, slots=True)
class NodeLinks:
    """A node's links both ways and its state history, newest first."""

    referred_by: list[LinkEnd]
    refers_to: list[LinkEnd]
    history: list[StateChange]


class PeerLinks:
    """The links of migration 0006, the stored layout and the graph."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record(self, job_id: uuid.UUID | str, links: Iterable[tuple[str, str]]) -> int:
        """Write a job's links (referrer, peer) in one statement; how many were written."""
        unique = sorted({(s, t) for s, t in links if s != t})
        if not unique:
            return 0
        async with pooled_connection(self._pool) as conn:
            cur = await conn.execute(
                query("record_links"),
                {
                    "job_id": str(job_id),
                    "sources": [s for s, _ in unique],
                    "targets": [t for _, t in unique],
                },
                prepare=False,
            )
            return cur.rowcount

    async def graph(self, where: GraphFilter = EVERY_NODE) -> dict[str, Any]:
        """The graph as ``GET /v1/graph`` answers it: the cursor it is consistent with, a
        summary, the nodes (each placed) and the links between them."""
        async with pooled_connection(self._pool) as conn:
            # Cursors for what has just committed (migration 0005), so the snapshot's cursor
            # covers every change it shows.
            await conn.execute(query("sequence_changes"), {"wait": False})
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                head = await conn.execute(query("change_head"))
                head_row = await head.fetchone()
                assert head_row is not None  # migration 0005 inserts the one head row
                rows = await _node_rows(conn, where, None)
                cur = await conn.execute(query("graph_links"))
                link_rows = await cur.fetchall()
            nodes = await self._placed(conn, rows)
        ids = {node["id"] for node in nodes}
        links = [
            {
                "source": source,
                "target": target,
                "first_seen": first,
                "last_seen": last,
                "job_id": job,
            }
            for source, target, first, last, job in link_rows
            if source in ids and target in ids
        ]
        by_state = dict.fromkeys(STATES, 0)
        by_class: dict[str, int] = {}
        for node in nodes:
            by_state[node["state"]] += 1
            by_class[node["class"]] = by_class.get(node["class"], 0) + 1
        return {
            "cursor": format_cursor(int(head_row[0])),
            "summary": {
                "nodes": len(nodes),
                "links": len(links),
                "by_state": by_state,
                "by_class": dict(sorted(by_class.items())),
            },
            "nodes": nodes,
            "links": links,
        }

    async def nodes(self, ids: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The nodes named (those in the map), as the graph shows them, placed if new, and
        every link with an end among them (the page draws those whose other end it has)."""
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > MAX_IDS:
            raise InvalidValue(f"at most {MAX_IDS} ids at once", field="ids")
        if not wanted:
            return [], []
        async with pooled_connection(self._pool) as conn:
            rows = await _node_rows(conn, EVERY_NODE, wanted)
            nodes = await self._placed(conn, rows)
            cur = await conn.execute(query("links_touching"), {"ids": wanted})
            link_rows = await cur.fetchall()
        links = [
            {
                "source": source,
                "target": target,
                "first_seen": first,
                "last_seen": last,
                "job_id": job,
            }
            for source, target, first, last, job in link_rows
        ]
        return nodes, links

    async def of_node(self, node_id: str, *, history: int = MAX_HISTORY) -> NodeLinks:
        """A node's links both ways and its services' last ``history`` state changes."""
        async with pooled_connection(self._pool) as conn:
            cur = await conn.execute(query("links_of"), {"node_id": node_id})
            referred_by: list[LinkEnd] = []
            refers_to: list[LinkEnd] = []
            for direction, other, first, last, job in await cur.fetchall():
                end = LinkEnd(other, first, last, str(job) if job is not None else None)
                (referred_by if direction == "in" else refers_to).append(end)
            await conn.execute(query("sequence_changes"), {"wait": False})  # the newest too
            cur = await conn.execute(query("node_history"), {"node_id": node_id, "limit": history})
            changes = [
                StateChange(format_cursor(int(seq)), at, service_id, from_state, to_state)
                for seq, at, service_id, from_state, to_state in await cur.fetchall()
            ]
        return NodeLinks(referred_by, refers_to, changes)

    async def prune(self, *, not_seen_for: timedelta, now: datetime | None = None) -> int:
        """Delete links not seen for ``not_seen_for``; how many went."""
        if not_seen_for <= timedelta(0):
            raise InvalidValue("not_seen_for must be positive", field="not_seen_for")
        async with pooled_connection(self._pool) as conn:
            if now is None:
                row = await (await conn.execute("SELECT now()")).fetchone()
                assert row is not None
                now = row[0]
            assert now is not None
            cur = await conn.execute(query("prune_links"), {"cutoff": now - not_seen_for})
            return cur.rowcount

    async def _placed(
        self, conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """The graph's nodes of ``rows``, those without a position placed and stored first."""
        unplaced = [(row[0], row[1]) for row in rows if row[5] is None]
        positions = await place_nodes(conn, unplaced) if unplaced else {}
        nodes = []
        for node_id, node_class, best, services, capabilities, x, y in rows:
            if x is None:
                spot = positions[node_id]
                x, y = spot.x, spot.y
            nodes.append(
                {
                    "id": node_id,
                    "class": node_class,
                    "state": STATE_ORDER[best],
                    "services": services,
                    "capabilities": capabilities,
                    "x": x,
                    "y": y,
                }
            )
        return nodes


async def place_nodes(
    conn: psycopg.AsyncConnection[Any], new: Sequence[tuple[str, str]]
) -> dict[str, Position]:
    """Place and store the (node_id, class) pairs ``new``; every one's stored position.

    Under one advisory lock, so concurrent requests place a node once and agree: what another
    placed meanwhile is read back, not placed again."""
    ids = sorted({node_id for node_id, _ in new})
    classes = {node_id: node_class for node_id, node_class in new}
    async with conn.transaction():
        await conn.execute(query("lock_layout"))
        cur = await conn.execute(query("layout_of"), {"ids": ids})
        stored = {row[0]: Position(row[1], row[2], row[3]) for row in await cur.fetchall()}
        todo = [node_id for node_id in ids if node_id not in stored]
        if todo:
            cur = await conn.execute(query("referrers_of"), {"ids": todo})
            referrers: dict[str, list[str]] = {}
            for target, source in await cur.fetchall():
                referrers.setdefault(target, []).append(source)
            cur = await conn.execute(query("placed_referrers"), {"ids": todo})
            placed = {row[1]: Position(row[2], row[3], row[4]) for row in await cur.fetchall()}
            wanted_classes = sorted({classes[node_id] for node_id in todo})
            cur = await conn.execute(query("taken_slots"), {"classes": wanted_classes})
            taken: dict[str, list[int]] = {}
            for node_class, slot in await cur.fetchall():
                taken.setdefault(node_class, []).append(slot)
            fresh = place(
                [NewNode(n, classes[n], tuple(referrers.get(n, ()))) for n in todo],
                placed,
                taken,
            )
            await conn.execute(
                query("insert_layout"),
                {
                    "ids": list(fresh),
                    "xs": [p.x for p in fresh.values()],
                    "ys": [p.y for p in fresh.values()],
                    "classes": [classes[n] for n in fresh],
                    "slots": [p.slot for p in fresh.values()],
                },
                prepare=False,
            )
            stored |= fresh
    return stored


async def _node_rows(
    conn: psycopg.AsyncConnection[Any], where: GraphFilter, ids: list[str] | None
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        query("graph_nodes"),
        {
            "ids": ids,
            "node_class": where.node_class,
            "best": [STATE_ORDER.index(s) for s in where.states] if where.states else None,
            "capabilities": list(where.capabilities),
        },
        prepare=False,
    )
    return await cur.fetchall()


def timestamp(at: datetime) -> str:
    """UTC, milliseconds, ``Z``, as the change feed writes times."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"

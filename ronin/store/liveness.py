"""The live map's store: node checks claimed by workers, their results, retention.

Every node in the map has one check row (``node_checks``) and every service one liveness row
(``service_liveness``), kept in step with ``discovered_services`` by the triggers of migration
0004. Workers share the checks through ``claim_due`` (``SKIP LOCKED``, leases, one round per
claim); ``record`` applies a batch of results in one statement, by the rules of
``liveness_rules``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ronin.errors import InvalidValue
from ronin.store.database import pooled_connection
from ronin.store.liveness_rules import STATES, State, transition_table
from ronin.store.queries import query

#: A failed check is retried after this share of the interval (PROTOCOL.md section 8).
RETRY_SHARE = 0.2
#: A service is gone once its checks have failed for this share of the interval: with retries
#: at a fifth, that is the first failure and two retries, and a node that died right after a
#: check is gone 1.4 intervals later (the protocol's bound is 2).
CONFIRM_SHARE = 0.4
PRUNE_BATCH = 1_000
#: Node requests of sightings applied per claim: a scan's worth of new nodes within a few.
DRAIN_LIMIT = 10_000

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """A node claimed for one check: where to fetch its descriptor, the services the map
    holds for it, and the round the result must carry."""

    node_id: str
    url: str
    service_ids: tuple[str, ...]
    round: int
    #: A retry confirming a death (some service of the node is suspect), not a routine check.
    confirming: bool = False


@dataclass(frozen=True, slots=True)
class Answered:
    """The node's descriptor answered (at ``url``) listing ``service_ids``."""

    check: NodeCheck
    url: str
    service_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class CheckFailed:
    """The node's descriptor could not be had; ``reason`` as a failed probe names it."""

    check: NodeCheck
    reason: str


CheckResult = Answered | CheckFailed


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch of results did: how many were current (not stale), how many services
    were verified, and each state change with its count."""

    accepted: int
    seen: int
    transitions: Counter[tuple[State, State]]
    #: The nodes whose current (not stale) result answered.
    answered: frozenset[str] = frozenset()
    #: The services made gone, each with the state it left.
    gone: tuple[tuple[str, State], ...] = ()


@dataclass(frozen=True, slots=True)
class Liveness:
    """One service's liveness row."""

    service_id: str
    state: State
    state_since: datetime
    last_checked: datetime | None
    misses: int


@dataclass(frozen=True, slots=True)
class Timing:
    """The verify interval and what follows from it: the retry delay after a failure and the
    confirmation period a service stays suspect before it is gone."""

    interval: timedelta
    retry: timedelta
    confirm: timedelta

    @classmethod
    def of(cls, interval: timedelta) -> Timing:
        if interval <= timedelta(0):
            raise InvalidValue("the verify interval must be positive", field="interval")
        return cls(interval, interval * RETRY_SHARE, interval * CONFIRM_SHARE)


_RULES = transition_table()
_RULE_PARAMS = {
    "rule_states": [rule[0] for rule in _RULES],
    "rule_events": [rule[1] for rule in _RULES],
    "rule_guarded": [rule[2] for rule in _RULES],
    "rule_confirmed": [rule[3] for rule in _RULES],
    "rule_next": [rule[4] for rule in _RULES],
}


class LivenessStore:
    """Node checks and service states, on ``node_checks`` and ``service_liveness``."""

    def __init__(self, pool: Pool, timing: Timing) -> None:
        self._pool = pool
        self.timing = timing

    async def claim_due(
        self, worker_id: str, batch: int, lease: timedelta, *, now: datetime | None = None
    ) -> list[NodeCheck]:
        """Up to ``batch`` due nodes, leased to ``worker_id`` for ``lease``; no other claimer
        gets them until the lease lapses or their result is recorded. What sightings asked
        of the node checks (new nodes, new addresses) is applied first."""
        if batch < 1 or lease <= timedelta(0):
            raise InvalidValue("batch and lease must be positive", field="batch")
        params = {"worker_id": worker_id, "batch": batch, "lease": lease, "now": now}
        async with pooled_connection(self._pool) as conn:
            await conn.execute(query("drain_node_requests"), {"now": now, "limit": DRAIN_LIMIT})
            cur = await conn.execute(query("claim_node_checks"), params)
            rows = await cur.fetchall()
        return [NodeCheck(row[0], row[1], tuple(row[3]), int(row[2]), bool(row[4])) for row in rows]

    async def record(
        self,
        worker_id: str,
        results: Sequence[CheckResult],
        *,
        guarded: bool = False,
        now: datetime | None = None,
    ) -> Recorded:
        """Apply a batch of results, in one statement; stale ones (the lease lapsed or the
        round moved on) change nothing. ``guarded``: the partition guard held, so failures
        make services unverified, never gone."""
        if not results:
            return Recorded(0, 0, Counter())
        listed = [
            (r.check.node_id, sid)
            for r in results
            if isinstance(r, Answered)
            for sid in sorted(r.service_ids)
        ]
        params: dict[str, Any] = {
            "worker_id": worker_id,
            "now": now,
            "guarded": guarded,
            "interval": self.timing.interval,
            "retry": self.timing.retry,
            "confirm": self.timing.confirm,
            "node_ids": [r.check.node_id for r in results],
            "rounds": [r.check.round for r in results],
            "answered": [isinstance(r, Answered) for r in results],
            "urls": [r.url if isinstance(r, Answered) else None for r in results],
            "listed_nodes": [node for node, _ in listed],
            "listed_services": [sid for _, sid in listed],
            "held_nodes": [r.check.node_id for r in results for _ in r.check.service_ids],
            "held_services": [sid for r in results for sid in r.check.service_ids],
            **_RULE_PARAMS,
        }
        async with pooled_connection(self._pool) as conn:
            cur = await conn.execute(query("record_checks"), params, prepare=False)
            row = await cur.fetchone()
        assert row is not None
        transitions: Counter[tuple[State, State]] = Counter(
            {(from_state, to_state): int(n) for from_state, to_state, n in row[2]}
        )
        gone = tuple((str(sid), from_state) for sid, from_state in row[4])
        return Recorded(int(row[0]), int(row[1]), transitions, frozenset(row[3]), gone)

    async def prune_gone(
        self, older_than: timedelta, *, now: datetime | None = None, batch: int = PRUNE_BATCH
    ) -> int:
        """Remove services gone for longer than ``older_than``, ``batch`` at a time (each in
        its own short transaction); how many went."""
        if older_than <= timedelta(0):
            raise InvalidValue("older_than must be positive", field="older_than")
        removed = 0
        async with pooled_connection(self._pool) as conn:
            cutoff = (now or await _server_now(conn)) - older_than
            while True:
                cur = await conn.execute(query("prune_gone"), {"cutoff": cutoff, "batch": batch})
                removed += cur.rowcount
                if cur.rowcount < batch:
                    return removed

    async def counts_by_state(self) -> dict[State, int]:
        """Services per state, every state present (0 when none)."""
        async with pooled_connection(self._pool) as conn:
            cur = await conn.execute(query("count_by_state"))
            found = {state: int(n) for state, n in await cur.fetchall()}
        return {state: found.get(state, 0) for state in STATES}

    async def liveness_of(self, service_ids: Sequence[str]) -> dict[str, Liveness]:
        """The liveness rows of ``service_ids`` (those the map holds)."""
        async with pooled_connection(self._pool) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("liveness_of"), {"service_ids": list(service_ids)})
            return {row["service_id"]: Liveness(**row) for row in await cur.fetchall()}

    async def node_check(self, node_id: str) -> dict[str, Any] | None:
        """One node's check row, as a dict (for operators and tests)."""
        async with pooled_connection(self._pool) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("node_check_of"), {"node_id": node_id})
            return await cur.fetchone()

    async def ping(self) -> None:
        """One round trip: the database self-check of the partition guard."""
        async with pooled_connection(self._pool) as conn:
            await conn.execute("SELECT 1")


async def _server_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]

"""The verifier: re-checks the map's nodes, shared with every other worker through the database.

Each batch: claim due nodes (``LivenessStore.claim_due``), fetch each one's descriptor within
bounded concurrency, decide whether the partition guard holds for the batch (the failure
share of recent routine checks, or a failing self-check: Ronin's database, its resolver), and
record the results in one statement; then the descriptors of the nodes that answered update
the map where they changed (``refresh``, as a sighting would), and gone services are removed
after their retention (``run``'s prune). The fetch is injected: the node gives it the probe's
session, scope policy and timeouts; a test gives it loopback beacons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ronin import metrics
from ronin.discovery.http_probe import Failed, Fetched
from ronin.discovery.verify import (
    DEFAULT_GUARD_FRACTION,
    DEFAULT_GUARD_MIN_SAMPLE,
    GuardWindow,
    failed,
    outcome,
)
from ronin.errors import RoninError
from ronin.store.liveness import CheckFailed, CheckResult, LivenessStore, NodeCheck, Recorded
from ronin.store.liveness_rules import State

logger = logging.getLogger(__name__)

#: Fetch one descriptor URL: never raises for a node's failure (it is a ``Failed``).
Fetch = Callable[[str], Awaitable[Fetched | Failed]]
#: One of Ronin's own health checks: raises (anything) when Ronin itself is unwell.
SelfCheck = Callable[[], Awaitable[object]]
#: Update the map from the descriptors of nodes that answered (``MapRefresh``).
Refresh = Callable[..., Awaitable[int]]

DEFAULT_BATCH = 100
DEFAULT_CONCURRENCY = 32
DEFAULT_FETCH_TIMEOUT_S = 5.0
DEFAULT_IDLE_S = 1.0
DEFAULT_PRUNE_EVERY_S = 60.0
#: A lease outlives the slowest batch this many times over.
LEASE_MARGIN = 2


@dataclass(frozen=True, slots=True)
class VerifierOptions:
    """How one verifier works. ``fetch_timeout_s`` is the injected fetch's total timeout: the
    lease is sized so that a batch of hanging nodes finishes well inside it."""

    worker_id: str
    guard_fraction: float = DEFAULT_GUARD_FRACTION
    guard_min_sample: int = DEFAULT_GUARD_MIN_SAMPLE
    batch: int = DEFAULT_BATCH
    concurrency: int = DEFAULT_CONCURRENCY
    fetch_timeout_s: float = DEFAULT_FETCH_TIMEOUT_S
    idle_s: float = DEFAULT_IDLE_S
    #: Gone services older than this are removed (RONIN_GONE_RETENTION_S); None: never.
    gone_retention: timedelta | None = None
    #: How often ``run`` prunes them.
    prune_every_s: float = DEFAULT_PRUNE_EVERY_S

    @property
    def lease(self) -> timedelta:
        """Long enough for every wave of a batch to time out, twice; at least 30 s."""
        waves = math.ceil(self.batch / self.concurrency)
        return timedelta(seconds=max(30.0, LEASE_MARGIN * waves * self.fetch_timeout_s))


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one batch did."""

    claimed: int
    failed: int
    guarded: bool
    recorded: Recorded | None
    reasons: tuple[str, ...] = ()
    """Why the guard held: ``share``, or ``self_check:<name>``."""


@dataclass(slots=True)
class VerifierCounts:
    """This verifier's counters since it started (for /metrics)."""

    checks: Counter[str] = field(default_factory=Counter)
    """Checks by outcome: ``answered``, or the failure's reason."""
    transitions: Counter[tuple[State, State]] = field(default_factory=Counter)
    guard_trips: int = 0
    """Times the guard began to hold (one per episode, not per batch)."""
    stale: int = 0
    """Results ignored because their lease had lapsed or their round moved on."""
    pruned: int = 0
    """Gone services removed after their retention."""


class Verifier:
    """Claims due node checks in batches, fetches, applies the partition guard, records."""

    def __init__(
        self,
        store: LivenessStore,
        fetch: Fetch,
        options: VerifierOptions,
        *,
        self_checks: Mapping[str, SelfCheck] | None = None,
        refresh: Refresh | None = None,
    ) -> None:
        self._store = store
        self._fetch = fetch
        self._refresh = refresh
        self.options = options
        self.self_checks: dict[str, SelfCheck] = (
            dict(self_checks) if self_checks is not None else {"database": store.ping}
        )
        """Ronin's own health checks, by name (``database``, ``resolver``)."""
        self._window = GuardWindow(
            window_s=store.timing.retry.total_seconds(),
            fraction=options.guard_fraction,
            min_sample=options.guard_min_sample,
        )
        self._limit = asyncio.Semaphore(options.concurrency)
        self._guard_holds = False
        self._pruned_at = -math.inf
        self.counts = VerifierCounts()

    @property
    def store(self) -> LivenessStore:
        """The liveness store this verifier records in (its timing: the verify interval)."""
        return self._store

    @property
    def guard_holds(self) -> bool:
        """Whether the guard held for the last batch."""
        return self._guard_holds

    async def run(self, stop: asyncio.Event) -> None:
        """Verify until ``stop`` is set: batch after batch while nodes are due, then a pause of
        ``idle_s``. A database error costs a pause, not the loop; leases lost meanwhile lapse
        and the nodes are checked again."""
        while not stop.is_set():
            try:
                await self._prune_when_due()
                report = await self.run_once()
            except RoninError as exc:
                logger.warning("verifier %s: %s", self.options.worker_id, exc)
                report = None
            if report is None or report.claimed < self.options.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.idle_s)

    async def run_once(self, *, now: datetime | None = None) -> BatchReport:
        """Claim one batch, check it, record it. ``now``: the time of both claim and record
        (tests drive time with it); by default the database's clock."""
        checks = await self._store.claim_due(
            self.options.worker_id, self.options.batch, self.options.lease, now=now
        )
        if not checks:
            return BatchReport(0, 0, self._guard_holds, None)
        fetched = await asyncio.gather(*(self._check(check) for check in checks))
        results = [result for result, _ in fetched]
        at = now.timestamp() if now is not None else time.time()
        self._window.add(at, results)
        reasons = await self._guard_reasons(at, results)
        self._note_guard(reasons, at)
        recorded = await self._store.record(
            self.options.worker_id, results, guarded=bool(reasons), now=now
        )
        self._count(results, recorded, checks)
        answers = [
            one for result, one in fetched if one and result.check.node_id in recorded.answered
        ]
        await self._update_map(answers, now)
        return BatchReport(len(checks), sum(map(failed, results)), bool(reasons), recorded, reasons)

    async def prune(self, *, now: datetime | None = None) -> int:
        """Remove the services gone for longer than the retention; how many went."""
        if self.options.gone_retention is None:
            return 0
        removed = await self._store.prune_gone(self.options.gone_retention, now=now)
        if removed:
            logger.info(
                "removed %d services gone for over %s", removed, self.options.gone_retention
            )
        self.counts.pruned += removed
        return removed

    async def _prune_when_due(self) -> None:
        """Prune at most once every ``prune_every_s`` (the first time at start)."""
        clock = time.monotonic()
        if clock - self._pruned_at >= self.options.prune_every_s:
            self._pruned_at = clock
            await self.prune()

    async def _check(self, check: NodeCheck) -> tuple[CheckResult, Fetched | None]:
        """One fetch within the concurrency bound, and the descriptor if it answered; an
        unexpected error is a failed check."""
        async with self._limit:
            try:
                fetched = await self._fetch(check.url)
            except Exception:
                logger.exception("verifying %s at %s", check.node_id, check.url)
                return CheckFailed(check, "verify_error"), None
        result = outcome(check, fetched)
        return result, fetched if isinstance(fetched, Fetched) and not failed(result) else None

    async def _update_map(self, answers: list[Fetched], now: datetime | None) -> None:
        """The descriptors of current answers update the map where they changed; a failure
        here costs the update (the next check tries again), never the check."""
        if self._refresh is None or not answers:
            return
        try:
            await self._refresh(answers, now=now)
        except Exception:
            logger.exception("updating the map from %d re-checked descriptors", len(answers))

    async def _guard_reasons(self, at: float, results: Sequence[CheckResult]) -> tuple[str, ...]:
        """Why the guard holds for this batch, if it does. The self-checks run only when some
        check failed: with none, there is nothing to protect."""
        if not any(map(failed, results)):
            return ()
        reasons = ["share"] if self._window.holds(at, held=self._guard_holds) else []
        for name, self_check in self.self_checks.items():
            try:
                await self_check()
            except Exception as exc:
                logger.warning("self-check %s failed: %s", name, exc)
                reasons.append(f"self_check:{name}")
        return tuple(reasons)

    def _note_guard(self, reasons: tuple[str, ...], at: float) -> None:
        """Log and count the guard's episodes: once when it begins to hold, once when a batch
        with failures no longer needs it."""
        holds = bool(reasons)
        if holds and not self._guard_holds:
            failures, checked = self._window.sample(at)
            self.counts.guard_trips += 1
            metrics.LIVENESS_GUARD_TRIPS.inc()
            logger.warning(
                "partition guard holds (%s): %d of %d nodes checked recently failed; failing "
                "services become unverified, not gone",
                ", ".join(reasons),
                failures,
                checked,
            )
        elif self._guard_holds and not holds:
            logger.info("partition guard released: checks fail no more than usual")
        self._guard_holds = holds

    def _count(
        self, results: Sequence[CheckResult], recorded: Recorded, checks: Sequence[NodeCheck]
    ) -> None:
        """Count the batch here and in /metrics; log each service made gone."""
        for result in results:
            key = result.reason if isinstance(result, CheckFailed) else "answered"
            self.counts.checks[key] += 1
            metrics.liveness_checked(key)
        self.counts.transitions.update(recorded.transitions)
        for (from_state, to_state), n in recorded.transitions.items():
            metrics.LIVENESS_TRANSITIONS.labels(from_state, to_state).inc(n)
        self.counts.stale += len(results) - recorded.accepted
        node_of = {sid: check.node_id for check in checks for sid in check.service_ids}
        for service_id, from_state in recorded.gone:
            logger.info(
                "service %s of node %s is gone (was %s)",
                service_id,
                node_of.get(service_id, "?"),
                from_state,
            )

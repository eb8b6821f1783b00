"""The verifier: re-checks the map's nodes, shared with every other worker through the database.

Each batch: claim due nodes (``LivenessStore.claim_due``), fetch each one's descriptor within
bounded concurrency, decide whether the partition guard holds for the batch (the failure
share of recent routine checks, or a failing self-check: Ronin's database, its resolver), and
record the results in one statement. The fetch is injected: the worker gives it the probe's
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

DEFAULT_BATCH = 100
DEFAULT_CONCURRENCY = 32
DEFAULT_FETCH_TIMEOUT_S = 5.0
DEFAULT_IDLE_S = 1.0
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


class Verifier:
    """Claims due node checks in batches, fetches, applies the partition guard, records."""

    def __init__(
        self,
        store: LivenessStore,
        fetch: Fetch,
        options: VerifierOptions,
        *,
        self_checks: Mapping[str, SelfCheck] | None = None,
    ) -> None:
        self._store = store
        self._fetch = fetch
        self.options = options
        self._self_checks = (
            dict(self_checks) if self_checks is not None else {"database": store.ping}
        )
        self._window = GuardWindow(
            window_s=store.timing.retry.total_seconds(),
            fraction=options.guard_fraction,
            min_sample=options.guard_min_sample,
        )
        self._limit = asyncio.Semaphore(options.concurrency)
        self._guard_holds = False
        self.counts = VerifierCounts()

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
        results = await asyncio.gather(*(self._check(check) for check in checks))
        at = now.timestamp() if now is not None else time.time()
        self._window.add(at, results)
        reasons = await self._guard_reasons(at, results)
        self._note_guard(reasons, at)
        recorded = await self._store.record(
            self.options.worker_id, results, guarded=bool(reasons), now=now
        )
        self._count(results, recorded)
        return BatchReport(len(checks), sum(map(failed, results)), bool(reasons), recorded, reasons)

    async def _check(self, check: NodeCheck) -> CheckResult:
        """One fetch within the concurrency bound; an unexpected error is a failed check."""
        async with self._limit:
            try:
                return outcome(check, await self._fetch(check.url))
            except Exception:
                logger.exception("verifying %s at %s", check.node_id, check.url)
                return CheckFailed(check, "verify_error")

    async def _guard_reasons(self, at: float, results: Sequence[CheckResult]) -> tuple[str, ...]:
        """Why the guard holds for this batch, if it does. The self-checks run only when some
        check failed: with none, there is nothing to protect."""
        if not any(map(failed, results)):
            return ()
        reasons = ["share"] if self._window.holds(at, held=self._guard_holds) else []
        for name, self_check in self._self_checks.items():
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

    def _count(self, results: Sequence[CheckResult], recorded: Recorded) -> None:
        for result in results:
            key = result.reason if isinstance(result, CheckFailed) else "answered"
            self.counts.checks[key] += 1
        self.counts.transitions.update(recorded.transitions)
        self.counts.stale += len(results) - recorded.accepted

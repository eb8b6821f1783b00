"""Back-pressure: above RONIN_MAX_PENDING_JOBS pending jobs, submissions are refused at once
(``QueueFull``, a 429 with Retry-After) instead of piling up and slowing every request.

Nothing is counted per request: the estimate is the last count of pending jobs (bounded, so
it never reads more of the index than the cap) plus the jobs this process queued since, and
it is recounted in the background at most every ``refresh_s``, so jobs that workers claimed
(or another node queued) show within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ronin.errors import QueueFull
from ronin.store.jobs import JobStore

logger = logging.getLogger(__name__)

REFRESH_S = 0.25
RETRY_AFTER_S = 1


class PendingGauge:
    """A cheap estimate of the pending jobs, and the check every submission passes."""

    def __init__(self, store: JobStore, *, limit: int, refresh_s: float = REFRESH_S) -> None:
        self._store = store
        self.limit = limit
        self._refresh_s = refresh_s
        self._estimate = 0
        self._counted_at: float | None = None
        self._recount: asyncio.Task[None] | None = None

    @property
    def estimate(self) -> int:
        """The pending jobs, as last counted plus those queued here since."""
        return self._estimate

    async def admit(self, jobs: int = 1) -> None:
        """Return if ``jobs`` more may be queued; ``QueueFull`` if they would take the pending
        jobs above the limit (a batch is refused whole)."""
        if self.limit <= 0:
            return
        if self._counted_at is None:
            await self._count()  # the first submission waits for the first count
        elif time.monotonic() - self._counted_at >= self._refresh_s and self._recount is None:
            self._recount = asyncio.create_task(self._count_later(), name="pending jobs count")
        if self._estimate + jobs > self.limit:
            raise QueueFull(
                f"{self._estimate:,} jobs are pending, the most this node queues is "
                f"{self.limit:,} (RONIN_MAX_PENDING_JOBS): retry later",
                retry_after_s=RETRY_AFTER_S,
            )

    def queued(self, jobs: int) -> None:
        """``jobs`` new jobs were queued by this process."""
        self._estimate += jobs

    async def _count(self) -> None:
        started = time.monotonic()
        before = self._estimate
        counted = await self._store.count_pending(up_to=self.limit + 1)
        # Jobs queued while the count ran may or may not be in it: count them, to be safe.
        self._estimate = counted + max(0, self._estimate - before)
        self._counted_at = started

    async def _count_later(self) -> None:
        try:
            await self._count()
        except Exception:  # the last estimate stands; the next submission tries again
            logger.warning("could not count the pending jobs", exc_info=True)
            self._counted_at = time.monotonic()
        finally:
            self._recount = None

    async def close(self) -> None:
        """Stop a count in flight."""
        if self._recount is not None:
            self._recount.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recount

"""Final writes of many jobs, batched: one statement and one commit for all the jobs a
worker finished in the last couple of milliseconds, instead of one each."""

from __future__ import annotations

import asyncio
import uuid

from ronin.jobs.queue_protocol import FinishQueue
from ronin.store.jobs import Finish

LINGER_S = 0.002
MAX_BATCH = 500


class FinishBatcher:
    """Collects ``Finish`` writes briefly and makes them together."""

    def __init__(self, store: FinishQueue, *, linger_s: float = LINGER_S) -> None:
        self._store = store
        self._linger_s = linger_s
        self._pending: list[tuple[Finish, asyncio.Future[bool]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def finish(self, item: Finish) -> bool:
        """End the job with the next batch; False if its lease was lost first."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_soon(), name="finish batch")
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._linger_s)
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                ended: set[uuid.UUID] = await self._store.finish_many([i for i, _ in batch])
            except Exception as exc:  # each waiting job decides whether to retry
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for item, future in batch:
                if not future.done():
                    future.set_result(item.job.job_id in ended)

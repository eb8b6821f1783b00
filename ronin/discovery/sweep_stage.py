"""Level 1 of a network target: sweep every address x port, and fetch a descriptor from
each open port as it is found, with progress (and the checkpoint) on a clock."""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ronin.discovery.sweep import RateLimit
from ronin.discovery.targets import Network, Probe, Sweep

#: How often a sweep reports progress, found or not: a range where nothing answers must
#: still record how far it got.
REPORT_INTERVAL_S = 0.5


class OpenPorts(Protocol):
    """Where a sweep's open ports come from (``ronin.discovery.sweep.open_ports``): the
    probes whose port is open; each closed one counted with ``on_closed`` and finished."""

    def __call__(
        self,
        sweep: Sweep,
        *,
        concurrency: int,
        rate: RateLimit,
        connect_timeout_s: float,
        on_closed: Callable[[str, int], None],
    ) -> AsyncIterator[Probe]: ...


def new_sweep(
    network: Network, ports: tuple[int, ...], job_id: uuid.UUID, checkpoint: dict[str, Any] | None
) -> Sweep:
    """The job's sweep, seeded by its id (so every attempt walks the same order), resumed
    where ``checkpoint`` left it."""
    sweep = Sweep(network, ports, zlib.crc32(job_id.bytes))
    if checkpoint:
        sweep.resume(checkpoint)
    return sweep


@dataclass(frozen=True, slots=True)
class SweepStage:
    """One sweep and the pace it runs at."""

    sweep: Sweep
    open_ports: OpenPorts
    concurrency: int
    rate: RateLimit
    connect_timeout_s: float

    async def run(
        self,
        *,
        on_open: Callable[[Probe], Awaitable[None]],
        on_closed: Callable[[str, int], None],
        report: Callable[[], Awaitable[None]],
    ) -> None:
        """Sweep to the end, ``on_open`` each open port (``concurrency`` at a time); a failed
        report (a lost lease) or a failed ``on_open`` stops the sweep.

        A probe whose ``on_open`` did not return stays in flight, so every later checkpoint
        repeats it rather than count it done with nothing written.
        """
        fetches: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        slots = asyncio.Semaphore(self.concurrency)

        async def fetch(probe: Probe) -> None:
            try:
                await on_open(probe)
            except Exception as exc:
                failures.append(exc)
                raise
            else:
                self.sweep.finished(probe)
            finally:
                slots.release()

        def settled(task: asyncio.Task[None]) -> None:
            fetches.discard(task)
            if not task.cancelled():
                task.exception()  # kept in ``failures``; retrieved here so none is logged

        ticker = asyncio.create_task(_report_every(report, REPORT_INTERVAL_S), name="progress")
        try:
            async for probe in self.open_ports(
                self.sweep,
                concurrency=self.concurrency,
                rate=self.rate,
                connect_timeout_s=self.connect_timeout_s,
                on_closed=on_closed,
            ):
                if ticker.done():
                    ticker.result()  # a lost lease stops the sweep here
                if failures:
                    raise failures[0]
                await slots.acquire()
                task = asyncio.create_task(fetch(probe))
                fetches.add(task)
                task.add_done_callback(settled)
            if fetches:
                await asyncio.gather(*fetches)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            for task in fetches:
                task.cancel()


async def _report_every(report: Callable[[], Awaitable[None]], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await report()

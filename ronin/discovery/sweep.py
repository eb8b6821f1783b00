"""Find the open ports of a sweep: a bounded number of non-blocking connects in flight.

Only an (address, port) that accepts a connection is worth an HTTP request; on a /16 that
is a few hundred of 65,536. A bare non-blocking connect costs a fraction of an HTTP client's
request, so the sweep asks the cheap question first.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from ronin.config import DEFAULT_SWEEP_METHOD, SweepMethod
from ronin.discovery.connect_sweep import start_sweep_process
from ronin.discovery.sweep_methods import block_function
from ronin.discovery.targets import Network, Probe, Sweep

DEFAULT_CONNECT_TIMEOUT_S = 1.0
#: Sweeps this large go to sweep processes; smaller ones are not worth starting them.
PROCESS_SWEEP_MIN_PROBES = 2048
MAX_SWEEP_PROCESSES = 8
BLOCK = 1024
MIN_BLOCK = 32

#: Sweep processes started ahead of time (``start_sweep_processes``) for the next sweep.
_started: ProcessPoolExecutor | None = None


class RateLimit:
    """At most ``per_second`` starts a second (a token bucket with a one-second burst)."""

    def __init__(self, per_second: float | None) -> None:
        self.per_second = per_second
        self._tokens = per_second or 0.0
        self._last = time.monotonic()

    async def wait(self) -> None:
        if not self.per_second:
            return
        while True:
            now = time.monotonic()
            self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.per_second)


async def is_open(address: str, port: int, timeout_s: float) -> tuple[bool, str]:
    """Whether (address, port) accepts a TCP connection; the reason when it does not."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except TimeoutError:
        return False, "timeout"
    except ConnectionRefusedError:
        return False, "refused"
    except OSError as exc:
        return False, "unreachable" if exc.errno else "connection_error"
    finally:
        sock.close()
    return True, ""


async def open_ports(
    sweep: Sweep,
    *,
    concurrency: int,
    rate: RateLimit,
    connect_timeout_s: float,
    on_closed: Callable[[str, int], None],
    method: SweepMethod = DEFAULT_SWEEP_METHOD,
) -> AsyncIterator[Probe]:
    """Yield the probes whose port is open; closed ones are counted by reason and marked
    finished. Large sweeps run in sweep processes, one per core, by ``method``
    (RONIN_SWEEP_METHOD); small ones connect from this loop."""
    if sweep.size >= PROCESS_SWEEP_MIN_PROBES:
        source = _open_ports_in_processes(
            sweep,
            concurrency=concurrency,
            per_second=rate.per_second,
            connect_timeout_s=connect_timeout_s,
            on_closed=on_closed,
            method=method,
        )
    else:
        source = _open_ports_in_loop(
            sweep,
            concurrency=concurrency,
            rate=rate,
            connect_timeout_s=connect_timeout_s,
            on_closed=on_closed,
        )
    async for probe in source:
        yield probe


async def _open_ports_in_processes(
    sweep: Sweep,
    *,
    concurrency: int,
    per_second: float | None,
    connect_timeout_s: float,
    on_closed: Callable[[str, int], None],
    method: SweepMethod = DEFAULT_SWEEP_METHOD,
) -> AsyncIterator[Probe]:
    """Blocks of the sweep, handed to one process per core, at most two blocks each queued."""
    sweep_block = block_function(method, sweep.network.version)  # before any process starts
    for probe in sweep.replayed():
        yield probe  # open ports a previous attempt had found but not yet fetched
    processes = sweep_process_count()
    share = max(1, concurrency // processes)
    pace = per_second / processes if per_second else None
    # A block is the unit a resumed sweep repeats: about a quarter second of work at most.
    block_size = BLOCK if pace is None else max(MIN_BLOCK, min(BLOCK, int(pace / 4)))
    loop = asyncio.get_running_loop()
    pool = _take_started() or _new_pool(processes)
    running: set[asyncio.Future[tuple[tuple[int, int], list[int], dict[str, int]]]] = set()
    try:
        while True:
            while len(running) < processes * 2 and (block := sweep.take_block(block_size)):
                running.add(
                    loop.run_in_executor(
                        pool,
                        partial(
                            sweep_block,
                            str(sweep.network),
                            sweep.ports,
                            sweep.seed,
                            block,
                            timeout_s=connect_timeout_s,
                            max_in_flight=share,
                            per_second=pace,
                        ),
                    )
                )
            if not running:
                return
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                block, opened, closed = future.result()
                for reason, count in closed.items():
                    on_closed(reason, count)
                for probe in sweep.block_done(block, opened, sum(closed.values())):
                    yield probe
    finally:
        for future in running:
            future.cancel()
        _stop(pool, abandon=bool(running))


def sweep_process_count() -> int:
    """One sweep process per core, at most ``MAX_SWEEP_PROCESSES``."""
    return max(1, min(os.cpu_count() or 1, MAX_SWEEP_PROCESSES))


def uses_sweep_processes(network: Network, ports: tuple[int, ...]) -> bool:
    """Whether a sweep of ``network`` on ``ports`` is large enough for sweep processes."""
    return Sweep(network, ports, 0).size >= PROCESS_SWEEP_MIN_PROBES


def start_sweep_processes() -> None:
    """Start the sweep processes now, for this process's next sweep to use: their start-up
    (an interpreter each) then runs beside the command's own, not at the sweep's start."""
    global _started
    if _started is None:
        _started = _new_pool(sweep_process_count())
        for _ in range(sweep_process_count()):
            _started.submit(os.getpid)  # each submission starts one process, till all run


def _take_started() -> ProcessPoolExecutor | None:
    global _started
    pool, _started = _started, None
    return pool


def _new_pool(processes: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=start_sweep_process
    )


def _stop(pool: ProcessPoolExecutor, *, abandon: bool) -> None:
    """Shut the sweep processes down; blocks still running when the sweep is abandoned (a
    cancelled job, a lost lease) are killed, not awaited: at a slow rate one block is many
    seconds of work, and the checkpoint repeats unfinished blocks anyway.

    A finished sweep does not wait for its idle processes to exit (15 ms of a /16's job):
    the pool's own thread joins them, and they die with this process in any case.
    """
    if abandon:
        terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
        else:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
    pool.shutdown(wait=abandon, cancel_futures=True)


async def _open_ports_in_loop(
    sweep: Sweep,
    *,
    concurrency: int,
    rate: RateLimit,
    connect_timeout_s: float,
    on_closed: Callable[[str, int], None],
) -> AsyncIterator[Probe]:
    """Non-blocking connects from this event loop, ``concurrency`` at a time."""
    found: asyncio.Queue[Probe | None] = asyncio.Queue(maxsize=concurrency)
    probes = iter(sweep)

    async def connector() -> None:
        for probe in probes:
            await rate.wait()
            opened, reason = await is_open(probe.address, probe.port, connect_timeout_s)
            if opened:
                await found.put(probe)
            else:
                on_closed(reason, 1)
                sweep.finished(probe)

    async def run_all() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(concurrency):
                    group.create_task(connector(), name=f"connector {index}")
        finally:
            await found.put(None)

    runner = asyncio.create_task(run_all(), name="sweep")
    try:
        while (probe := await found.get()) is not None:
            yield probe
        await runner
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

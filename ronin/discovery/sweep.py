"""Find the open ports of a sweep: a bounded number of non-blocking connects in flight.

Only an (address, port) that accepts a connection is worth an HTTP request; on a /16 that
is a few hundred of 65,536. A bare non-blocking connect costs a fraction of an HTTP client's
request, so the sweep asks the cheap question first.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

from ronin.discovery.targets import Probe, Sweep

DEFAULT_CONNECT_TIMEOUT_S = 1.0


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
    on_closed: Callable[[Probe, str], None],
) -> AsyncIterator[Probe]:
    """Yield the probes whose port is open; closed ones are reported and marked finished."""
    found: asyncio.Queue[Probe | None] = asyncio.Queue(maxsize=concurrency)
    probes = iter(sweep)

    async def connector() -> None:
        for probe in probes:
            await rate.wait()
            opened, reason = await is_open(probe.address, probe.port, connect_timeout_s)
            if opened:
                await found.put(probe)
            else:
                on_closed(probe, reason)
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

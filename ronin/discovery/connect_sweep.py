"""The lean connect sweep a sweep process runs: plain non-blocking sockets and epoll.

No event loop, no coroutine, no future per address: on loopback this asks "is the port
open?" about ten times faster than asyncio does, and several processes use every core.
Runs in a child process, so it takes and returns only plain values.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import select
import signal
import socket
import time
from collections import Counter

from ronin.discovery.targets import Sweep

_IN_PROGRESS = {errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY}
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Sweep process start-up: ask Linux to kill this process when its parent dies, so a
    ``kill -9`` of a worker does not leave sweep processes behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def sweep_block(
    network: str,
    ports: tuple[int, ...],
    seed: int,
    block: tuple[int, int],
    *,
    timeout_s: float,
    max_in_flight: int,
    per_second: float | None,
) -> tuple[tuple[int, int], list[int], dict[str, int]]:
    """Connect to every probe of ``block``; return the block, its open positions and the
    closed ones counted by reason (refused, timeout, unreachable, error)."""
    sweep = Sweep(ipaddress.ip_network(network), ports, seed)
    poller = select.epoll()
    pending: dict[int, tuple[socket.socket, int, float]] = {}
    opened: list[int] = []
    closed: Counter[str] = Counter()
    started, count = time.monotonic(), 0
    try:
        for probe in sweep.probes_between(*block):
            if per_second:
                count += 1
                # Hold back until this probe's turn, settling connects meanwhile.
                while (ahead := started + count / per_second - time.monotonic()) > 0:
                    _wait(poller, pending, opened, closed, ahead)
            family = socket.AF_INET6 if ":" in probe.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            result = sock.connect_ex((probe.address, probe.port))
            if result in _IN_PROGRESS:
                pending[sock.fileno()] = (sock, probe.position, time.monotonic() + timeout_s)
                poller.register(sock.fileno(), select.EPOLLOUT)
            else:
                _settle(sock, probe.position, result, opened, closed)
            while len(pending) >= max_in_flight:
                _wait(poller, pending, opened, closed, timeout_s)
        while pending:
            _wait(poller, pending, opened, closed, timeout_s)
    finally:
        for sock, _, _ in pending.values():
            sock.close()
        poller.close()
    return block, opened, dict(closed)


def _wait(
    poller: select.epoll,
    pending: dict[int, tuple[socket.socket, int, float]],
    opened: list[int],
    closed: Counter[str],
    limit_s: float,
) -> None:
    """Settle the connects that completed (or timed out) within ``limit_s``."""
    now = time.monotonic()
    soonest = min((deadline for _, _, deadline in pending.values()), default=now + limit_s)
    for fd, _ in poller.poll(max(0.0, min(limit_s, soonest - now))):
        sock, position, _ = pending.pop(fd)
        poller.unregister(fd)
        _settle(sock, position, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), opened, closed)
    now = time.monotonic()
    for fd in [fd for fd, (_, _, deadline) in pending.items() if deadline <= now]:
        sock, _, _ = pending.pop(fd)
        poller.unregister(fd)
        sock.close()
        closed["timeout"] += 1


def _settle(
    sock: socket.socket, position: int, error: int, opened: list[int], closed: Counter[str]
) -> None:
    sock.close()
    if error == 0:
        opened.append(position)
    elif error == errno.ECONNREFUSED:
        closed["refused"] += 1
    elif error in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        closed["unreachable"] += 1
    elif error == errno.ETIMEDOUT:
        closed["timeout"] += 1
    else:
        closed["error"] += 1

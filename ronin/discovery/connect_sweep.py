"""The lean connect sweep a sweep process runs: plain non-blocking sockets and epoll.

No event loop, no coroutine, no future per address: on loopback this asks "is the port
open?" about ten times faster than asyncio does, and several processes use every core.
Runs in a child process, so it takes and returns only plain values.
"""

from __future__ import annotations

import _socket
import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import select
import signal
import socket
import time
from collections import Counter, deque

from ronin.discovery.targets import Sweep

_IN_PROGRESS = {errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY}
_PR_SET_PDEATHSIG = 1

#: A sweep process's connects, by (family, timeout), kept from one block to the next: its
#: spare sockets and its epoll serve every block it runs. Empty outside sweep processes.
_kept: dict[tuple[int, float], _Connects] = {}
_keep_between_blocks = False


def start_sweep_process() -> None:
    """Sweep process start-up: die with the parent, and keep sockets between blocks.

    A block of 1,024 probes at 1,024 in flight would otherwise open (and close) a socket
    per probe: without its spares a block costs twice the system calls.
    """
    global _keep_between_blocks
    _keep_between_blocks = True
    die_with_parent()


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so a ``kill -9`` of a worker
    does not leave sweep processes behind."""
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
    v6 = sweep.network.version == 6
    to_text = _v6_text if v6 else _v4_text
    key = (socket.AF_INET6 if v6 else socket.AF_INET, timeout_s)
    connects = _kept.pop(key, None) or _Connects(*key)
    pending, monotonic = connects.pending, time.monotonic
    started, count = monotonic(), 0
    kept = False
    try:
        for position, address, port in sweep.targets_between(*block):
            if per_second:
                count += 1
                # Hold back until this probe's turn, settling connects meanwhile.
                while (ahead := started + count / per_second - monotonic()) > 0:
                    connects.wait(ahead)
            connects.start(position, (to_text(address), port))
            while len(pending) >= max_in_flight:
                connects.wait(timeout_s)
        while pending:
            connects.wait(timeout_s)
        opened, closed = connects.opened, dict(connects.closed)
        if _keep_between_blocks:
            connects.opened, connects.closed = [], Counter()
            _kept[key] = connects
            kept = True
    finally:
        if not kept:
            connects.close()
    return block, opened, closed


def _v4_text(address: int) -> str:
    return socket.inet_ntoa(address.to_bytes(4, "big"))


def _v6_text(address: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, "big"))


#: A connect in flight: its socket, the probe's position, the probe's (address, port).
_Entry = tuple[_socket.socket, int, tuple[str, int]]


class _Connects:
    """The connects of one block in flight, about two system calls a refused probe.

    A socket whose connect was refused is used again: on Linux a second ``connect`` of a
    socket epoll reported returns how the first ended (0 when it connected, its errno when
    not: no ``getsockopt``) and resets a failed one, which then connects anew: no
    ``socket``, ``close`` or ``epoll_ctl`` per probe. Sockets are registered once,
    edge-triggered, so a spare one between probes never wakes the poll twice. Deadlines
    come in send order: the soonest is the head of a queue (entries settled since stay in
    it until they reach the head).
    """

    def __init__(self, family: int, timeout_s: float) -> None:
        self.family = family
        self.timeout_s = timeout_s
        self.poller = select.epoll()
        self.pending: dict[int, _Entry] = {}
        self.deadlines: deque[tuple[float, int, _Entry]] = deque()
        self.spare: list[_socket.socket] = []
        self.opened: list[int] = []
        self.closed: Counter[str] = Counter()

    def start(self, position: int, target: tuple[str, int]) -> None:
        """Send the connect of one probe."""
        reused = bool(self.spare)
        sock = self.spare.pop() if reused else self._new_socket()
        result = sock.connect_ex(target)
        if result in _IN_PROGRESS:
            entry = (sock, position, target)
            fd = sock.fileno()
            self.pending[fd] = entry
            self.deadlines.append((time.monotonic() + self.timeout_s, fd, entry))
            return
        sock.close()
        if reused and result != 0:
            self.start(position, target)  # a spare socket that would not connect: a fresh one
        elif result == 0:
            self.opened.append(position)
        else:
            self.closed[close_reason(result)] += 1

    def wait(self, limit_s: float) -> None:
        """Settle the connects that completed (or timed out) within ``limit_s``."""
        pending, deadlines = self.pending, self.deadlines
        while deadlines and pending.get(deadlines[0][1]) is not deadlines[0][2]:
            deadlines.popleft()  # settled already
        wait_s = min(limit_s, deadlines[0][0] - time.monotonic()) if deadlines else limit_s
        for fd, _ in self.poller.poll(max(0.0, wait_s)):
            entry = pending.get(fd)
            if entry is None:
                continue  # a spare socket's reset
            sock, position, target = entry
            result = sock.connect_ex(target)  # how it ended; never sends: it is connecting
            if result in _IN_PROGRESS:
                continue  # an earlier probe's reset, reported late
            del pending[fd]
            if result in (0, errno.EISCONN):
                sock.close()
                self.opened.append(position)
            else:
                self.spare.append(sock)
                self.closed[close_reason(result)] += 1
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, fd, entry = deadlines.popleft()
            if pending.get(fd) is entry:
                del pending[fd]
                entry[0].close()
                self.closed["timeout"] += 1

    def close(self) -> None:
        for sock, _, _ in self.pending.values():
            sock.close()
        for sock in self.spare:
            sock.close()
        self.poller.close()

    def _new_socket(self) -> _socket.socket:
        # The C type: no Python-level __init__ or close per socket.
        sock = _socket.socket(self.family, _STREAM)
        self.poller.register(sock.fileno(), select.EPOLLOUT | select.EPOLLET)
        return sock


_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


def close_reason(error: int) -> str:
    """Why a probe is closed, from the errno its connect failed with."""
    if error == errno.ECONNREFUSED:
        return "refused"
    if error in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if error == errno.ETIMEDOUT:
        return "timeout"
    return "error"

"""Targets of a network scan: every (address, port) of a CIDR, in a seeded random order,
never materialised.

Like masscan and zmap, the sweep walks a permutation of the index space: index ``i`` of
``hosts x ports`` is visited at position ``p`` where ``i = permute(p)``, a bijection on the
next power of two (positions mapping past the end are skipped, "cycle walking"). So a /8 costs
no memory, the load spreads over the whole range, and where a sweep stands is one integer:
a job re-claimed after a crash resumes from its checkpoint instead of starting over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MULTIPLIER = 0x9E3779B97F4A7C15  # odd: multiplication is a bijection modulo 2^k


@dataclass(frozen=True, slots=True)
class Probe:
    """One (address, port) of a sweep, and its position in the walk."""

    position: int
    address: str
    port: int


class Permutation:
    """A seeded bijection on ``range(2**bits)``: xorshift, odd multiply, add, xorshift."""

    def __init__(self, size: int, seed: int) -> None:
        self.bits = max(1, (size - 1).bit_length())
        self.mask = (1 << self.bits) - 1
        self.shift = max(1, self.bits // 2)
        self.offset = (seed * _MULTIPLIER) & self.mask
        self.multiplier = (_MULTIPLIER ^ (seed << 1)) | 1

    @property
    def domain(self) -> int:
        return self.mask + 1

    def __call__(self, position: int) -> int:
        x = position ^ (position >> self.shift)
        x = (x * self.multiplier) & self.mask
        x = (x + self.offset) & self.mask
        return x ^ (x >> self.shift)


class Sweep:
    """The probes of ``network x ports``, in permuted order, resumable from a checkpoint.

    IPv4 networks of 4 addresses or more skip their network and broadcast addresses.
    """

    def __init__(self, network: Network, ports: tuple[int, ...], seed: int) -> None:
        self.network = network
        self.ports = ports
        self.seed = seed
        first, last = 0, network.num_addresses - 1
        if network.version == 4 and network.num_addresses >= 4:
            first, last = 1, last - 1
        self._first_host = int(network.network_address) + first
        self.hosts = last - first + 1
        self.size = self.hosts * len(ports)
        self._permutation = Permutation(self.size, seed)
        self._version = network.version
        self.next_position = 0
        self._in_flight: set[int] = set()
        self._blocks: set[tuple[int, int]] = set()
        self._replay: list[int] = []
        self._replay_blocks: list[tuple[int, int]] = []
        self.done = 0

    def __iter__(self) -> Iterator[Probe]:
        """Probes not yet handed out (a resumed sweep first repeats those in flight)."""
        while self._replay_blocks:
            start, stop = self._replay_blocks.pop()
            self._replay.extend(reversed(range(start, stop)))
        while self._replay:
            position = self._replay.pop()
            if self._permutation(position) < self.size:
                self._in_flight.add(position)
                yield self._probe(position)
        domain = self._permutation.domain
        while self.next_position < domain:
            position = self.next_position
            self.next_position += 1
            if self._permutation(position) < self.size:
                self._in_flight.add(position)
                yield self._probe(position)

    def replayed(self) -> list[Probe]:
        """Single probes a resumed sweep must repeat (open ports not yet fetched), handed out."""
        probes = [self._probe(p) for p in reversed(self._replay)]
        self._in_flight.update(probe.position for probe in probes)
        self._replay = []
        return probes

    def take_block(self, count: int) -> tuple[int, int] | None:
        """Reserve up to ``count`` positions for a sweep process; None once all are handed out.

        A block is in flight, as a range, until ``block_done``.
        """
        if self._replay_blocks:
            block = self._replay_blocks.pop()
        elif self.next_position < self._permutation.domain:
            stop = min(self.next_position + count, self._permutation.domain)
            block = (self.next_position, stop)
            self.next_position = stop
        else:
            return None
        self._blocks.add(block)
        return block

    def probes_between(self, start: int, stop: int) -> Iterator[Probe]:
        """The probes at positions ``start`` to ``stop`` (what a sweep process works through)."""
        for position in range(start, stop):
            if self._permutation(position) < self.size:
                yield self._probe(position)

    def targets_between(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(position, address as an int, port)`` of the probes ``probes_between`` gives, in
        the same order: a sweep process's hot loop, without an object per probe."""
        permutation, size, ports = self._permutation, self.size, self.ports
        shift, mask = permutation.shift, permutation.mask
        multiplier, offset = permutation.multiplier, permutation.offset
        first, count = self._first_host, len(ports)
        for position in range(start, stop):
            x = position ^ (position >> shift)
            x = (((x * multiplier) & mask) + offset) & mask
            index = x ^ (x >> shift)
            if index < size:
                if count == 1:
                    yield position, first + index, ports[0]
                else:
                    host, port_index = divmod(index, count)
                    yield position, first + host, ports[port_index]

    def block_done(
        self, block: tuple[int, int], open_positions: list[int], closed: int
    ) -> list[Probe]:
        """A block is swept: its closed probes are done, its open ones stay in flight until
        their descriptors are fetched (``finished``)."""
        self._blocks.discard(block)
        self._in_flight.update(open_positions)
        self.done += closed
        return [self._probe(position) for position in open_positions]

    def finished(self, probe: Probe) -> None:
        """Mark a probe done: the checkpoint no longer needs to repeat it."""
        self._in_flight.discard(probe.position)
        self.done += 1

    def checkpoint(self) -> dict[str, Any]:
        """Where the sweep stands: everything before ``next`` is done but the positions in
        ``in_flight`` and the ranges in ``in_flight_blocks``."""
        return {
            "seed": self.seed,
            "next": self.next_position,
            "in_flight": sorted(self._in_flight | set(self._replay)),
            "in_flight_blocks": sorted(self._blocks | set(self._replay_blocks)),
            "done": self.done,
        }

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue a sweep where a previous attempt's checkpoint left it."""
        if checkpoint.get("seed") != self.seed:
            return
        self.next_position = int(checkpoint["next"])
        self._replay = [int(p) for p in checkpoint.get("in_flight", [])][::-1]
        self._replay_blocks = [
            (int(start), int(stop)) for start, stop in checkpoint.get("in_flight_blocks", [])
        ][::-1]
        self.done = int(checkpoint.get("done", 0))

    @property
    def fraction_done(self) -> float:
        return min(1.0, self.done / self.size) if self.size else 1.0

    def _probe(self, position: int) -> Probe:
        index = self._permutation(position)
        host, port_index = divmod(index, len(self.ports))
        address = ipaddress.ip_address(self._first_host + host)
        assert address.version == self._version
        return Probe(position, str(address), self.ports[port_index])

"""Which block function the sweep processes run: connects, or raw SYNs where allowed."""

from __future__ import annotations

from collections.abc import Callable

from ronin.config import SweepMethod
from ronin.discovery.connect_sweep import sweep_block
from ronin.discovery.syn_sweep import NO_PERMISSION, syn_permitted, syn_sweep_block
from ronin.errors import ScanFailed

#: ``sweep_block``'s shape: (network, ports, seed, block, *, timeout_s, max_in_flight,
#: per_second) -> (block, open positions, closed counts by reason).
BlockFunction = Callable[..., tuple[tuple[int, int], list[int], dict[str, int]]]


def block_function(method: SweepMethod, version: int) -> BlockFunction:
    """The sweep of ``method`` for an IPv``version`` network: ``connect`` always connects;
    ``syn`` sends raw SYNs (IPv4; an IPv6 sweep connects) and refuses to run without
    CAP_NET_RAW, naming the fix; ``auto`` sends SYNs when it may, and connects otherwise."""
    if method == "connect" or version != 4:
        return sweep_block
    if syn_permitted():
        return syn_sweep_block
    if method == "syn":
        raise ScanFailed(NO_PERMISSION)
    return sweep_block

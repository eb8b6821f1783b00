"""Both block functions of the sweep processes (RONIN_SWEEP_METHOD: ``connect`` and ``syn``)
say the same of every probe, and send to nothing but their block.

- Listeners on a few addresses of a loopback /22: exactly their positions (the seeded order's)
  are open, every other probe refused; a block's results are the block's probes only.
- Pacing: the k-th probe is never sent before k / per_second (counted, never timed).
- A namespace behind a veth, routed a /28 it answers for: iptables counters there show a
  packet for each address of the block and none for any other; with every SYN dropped, each
  probe is a timeout and no more than ``max_in_flight`` wait at once.
- The SYN sweep leaves no connection behind: the listeners have nothing to accept.

The SYN tests skip without raw sockets (root or CAP_NET_RAW), the namespace ones without root.
Network only to loopback and into the test's own namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ronin.discovery import connect_sweep, syn_sweep
from ronin.discovery.connect_sweep import sweep_block
from ronin.discovery.syn_sweep import syn_permitted, syn_sweep_block
from ronin.discovery.targets import Sweep
from tests.support import netns
from tests.support.netns import VethNamespace
from tests.support.netns_fleet import SYN_RULE, add_rule, iptables_reason, namespace_beacons

BlockFunction = Callable[..., tuple[tuple[int, int], list[int], dict[str, int]]]
SEED = 20261203
#: Generous: a refused probe answers at once, so no test waits for it.
TIMEOUT_S = 2.0


@pytest.fixture(params=["connect", "connect, sockets kept", "syn"])
def method(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BlockFunction]:
    """Each block function; the connect sweep also as a sweep process runs it, its sockets
    kept from one block to the next."""
    if request.param == "syn" and not syn_permitted():
        pytest.skip("the SYN sweep needs raw sockets: root or CAP_NET_RAW")
    close = lambda: None  # noqa: E731
    if request.param == "connect, sockets kept":
        close = keep_sockets_between_blocks(monkeypatch)
    yield syn_sweep_block if request.param == "syn" else sweep_block
    close()


def keep_sockets_between_blocks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """What ``start_sweep_process`` sets in a sweep process (but the parent-death signal);
    returns what closes the sockets kept."""
    kept: dict[Any, connect_sweep._Connects] = {}
    monkeypatch.setattr(connect_sweep, "_kept", kept)
    monkeypatch.setattr(connect_sweep, "die_with_parent", lambda: None)
    monkeypatch.setattr(connect_sweep, "_keep_between_blocks", False)
    connect_sweep.start_sweep_process()
    assert connect_sweep._keep_between_blocks

    def close() -> None:
        for connects in kept.values():
            connects.close()

    return close


@dataclass
class Listeners:
    network: ipaddress.IPv4Network
    port: int  # the listeners' port
    closed_port: int  # a port bound on the first address, never listening
    addresses: set[str]
    sockets: list[socket.socket]


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    """Five listeners on one port at random addresses of a random loopback /22 (clear of
    127.0.0.0/16 and of the benchmark fleet's 127.50.0.0/16)."""
    second = 100 + secrets.randbelow(150)
    network = ipaddress.IPv4Network((f"127.{second}.{secrets.randbelow(64) * 4}.0", 22))
    hosts = list(network.hosts())
    chosen = [str(hosts[secrets.randbelow(len(hosts))]) for _ in range(5)]
    sockets: list[socket.socket] = []
    try:
        first = socket.socket()
        sockets.append(first)
        first.bind((chosen[0], 0))
        port = first.getsockname()[1]
        for address in set(chosen) - {chosen[0]}:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((address, port))
        for sock in sockets:
            sock.listen(64)
            sock.setblocking(False)
        reserved = socket.socket()
        sockets.append(reserved)
        reserved.bind((chosen[0], 0))
        yield Listeners(
            network=network,
            port=port,
            closed_port=reserved.getsockname()[1],
            addresses=set(chosen),
            sockets=sockets[:-1],
        )
    finally:
        for sock in sockets:
            sock.close()


def whole(sweep: Sweep) -> tuple[int, int]:
    return 0, sweep._permutation.domain


def test_the_open_ports_are_found_exactly_and_the_rest_refused(
    method: BlockFunction, listeners: Listeners
) -> None:
    ports = (listeners.port, listeners.closed_port)
    sweep = Sweep(listeners.network, ports, SEED)
    block, opened, closed = method(
        str(listeners.network), ports, SEED, whole(sweep), **pace(max_in_flight=64)
    )
    assert block == whole(sweep)
    expected = [
        probe.position
        for probe in sweep.probes_between(*block)
        if probe.address in listeners.addresses and probe.port == listeners.port
    ]
    assert sorted(opened) == expected
    assert closed == {"refused": sweep.size - len(listeners.addresses)}


def test_a_block_answers_for_its_own_probes(method: BlockFunction, listeners: Listeners) -> None:
    ports = (listeners.port,)
    sweep = Sweep(listeners.network, ports, SEED)
    found: list[int] = []
    swept = 0
    for block in [(0, 300), (300, 301), (301, 1000), (1000, whole(sweep)[1])]:
        done, opened, closed = method(str(listeners.network), ports, SEED, block, **pace())
        positions = [probe.position for probe in sweep.probes_between(*block)]
        assert done == block
        assert set(opened) <= set(positions)
        assert len(opened) + sum(closed.values()) == len(positions)
        found += opened
        swept += len(positions)
    assert swept == sweep.size
    assert sorted(sweep._probe(p).address for p in found) == sorted(listeners.addresses)


def test_a_sweep_process_opens_its_sockets_once_for_all_its_blocks(
    listeners: Listeners, monkeypatch: pytest.MonkeyPatch
) -> None:
    close = keep_sockets_between_blocks(monkeypatch)
    opened_sockets: list[int] = []
    new_socket = connect_sweep._Connects._new_socket

    def counted(self: connect_sweep._Connects) -> Any:
        opened_sockets.append(1)
        return new_socket(self)

    monkeypatch.setattr(connect_sweep._Connects, "_new_socket", counted)
    ports = (listeners.port,)
    sweep = Sweep(listeners.network, ports, SEED)
    later_probes = later_sockets = 0
    try:
        for block in [(0, 200), (200, 400), (400, 600)]:
            before = len(opened_sockets)
            _, opened, closed = sweep_block(str(listeners.network), ports, SEED, block, **pace())
            probes = len(list(sweep.probes_between(*block)))
            assert len(opened) + sum(closed.values()) == probes  # each block's own answers
            if block[0]:
                later_probes += probes
                later_sockets += len(opened_sockets) - before
    finally:
        close()
    # Each block at 256 in flight would open a socket per probe; a spare that a reset left
    # refusing at once is replaced now and then.
    assert later_sockets <= later_probes // 10


def test_the_syn_sweep_leaves_no_connection_behind(listeners: Listeners) -> None:
    if not syn_permitted():
        pytest.skip("the SYN sweep needs raw sockets: root or CAP_NET_RAW")
    ports = (listeners.port,)
    sweep = Sweep(listeners.network, ports, SEED)
    _, opened, _ = syn_sweep_block(str(listeners.network), ports, SEED, whole(sweep), **pace())
    assert len(opened) == len(listeners.addresses)
    for listener in listeners.sockets:
        with pytest.raises(BlockingIOError):
            listener.accept()  # no handshake completed
    sockets = subprocess.run(
        ["ss", "-Htan", "state", "syn-recv"], capture_output=True, text=True, check=True
    ).stdout
    assert not any(f"{address}:{listeners.port}" in sockets for address in listeners.addresses)


def test_pacing_holds_every_probe_to_its_turn(
    method: BlockFunction, listeners: Listeners, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_sends(monkeypatch)
    per_second = 400.0
    ports = (listeners.port,)
    sweep = Sweep(listeners.network, ports, SEED)
    block = (0, 80)
    probes = len(list(sweep.probes_between(*block)))
    started = time.monotonic()
    method(str(listeners.network), ports, SEED, block, **pace(per_second=per_second))
    assert len(sent) == probes
    for count, at in enumerate(sent, start=1):
        assert at - started >= count / per_second


def pace(
    *, max_in_flight: int = 256, per_second: float | None = None, timeout_s: float = TIMEOUT_S
) -> dict[str, Any]:
    return {"timeout_s": timeout_s, "max_in_flight": max_in_flight, "per_second": per_second}


def record_sends(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each probe is sent (by either block function), in order."""
    sent: list[float] = []
    start = connect_sweep._Connects.start
    segment = syn_sweep.syn_segment

    def recorded_start(self: connect_sweep._Connects, *args: Any) -> None:
        sent.append(time.monotonic())
        start(self, *args)

    def recorded_segment(*args: int) -> bytes:
        sent.append(time.monotonic())
        return segment(*args)

    monkeypatch.setattr(connect_sweep._Connects, "start", recorded_start)
    monkeypatch.setattr(syn_sweep, "syn_segment", recorded_segment)
    return sent


class _Tally(dict[Any, Any]):
    """A dict that remembers the most entries it held."""

    most = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        _Tally.most = max(_Tally.most, len(self))


def record_in_flight(monkeypatch: pytest.MonkeyPatch) -> type[_Tally]:
    """The most probes either block function had waiting at once."""
    _Tally.most = 0
    for owner in (connect_sweep._Connects, syn_sweep.Answers):
        init = owner.__init__

        def tallied(self: Any, *args: Any, _init: Any = init) -> None:
            _init(self, *args)
            self.pending = _Tally()

        monkeypatch.setattr(owner, "__init__", tallied)
    return _Tally


# --- Into a namespace: what is sent where --------------------------------------------------


@dataclass
class Routed:
    link: VethNamespace
    network: ipaddress.IPv4Network


@pytest.fixture
def routed(link: VethNamespace) -> Iterator[Routed]:
    """A /28 routed into the namespace, which answers for every address of it (a local
    route), with a counting rule in its raw PREROUTING chain for each address."""
    reason = iptables_reason()
    if reason:
        pytest.skip(reason)
    network = netns.free_ipv4_network(28)
    inside(link, netns.IP, "route", "add", "local", str(network), "dev", "lo")
    for address in network:
        inside(link, "iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-d", f"{address}/32")
    root = [netns.IP, "route", "add", str(network), "via", link.inner_address]
    subprocess.run(root, check=True, capture_output=True, timeout=netns.COMMAND_TIMEOUT_S)
    try:
        yield Routed(link, network)
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(
                [netns.IP, "route", "del", str(network)],
                capture_output=True,
                timeout=netns.COMMAND_TIMEOUT_S,
                check=False,
            )


def inside(link: VethNamespace, *argv: str) -> str:
    return subprocess.run(
        link.command(*argv),
        capture_output=True,
        text=True,
        check=True,
        timeout=netns.COMMAND_TIMEOUT_S,
    ).stdout


def packets_to(routed: Routed) -> dict[str, int]:
    """Packets each address of the /28 was sent so far (the namespace's counters)."""
    listing = inside(
        routed.link, "iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"
    )
    counts = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0].isdigit():
            counts[fields[-1].removesuffix("/32")] = int(fields[0])
    return counts


PORT = 30437


def test_only_the_blocks_addresses_are_sent_a_packet(method: BlockFunction, routed: Routed) -> None:
    sweep = Sweep(routed.network, (PORT,), SEED)
    block = (3, 11)
    expected = {probe.address for probe in sweep.probes_between(*block)}
    assert 0 < len(expected) < sweep.size
    _, opened, closed = method(str(routed.network), (PORT,), SEED, block, **pace())
    assert opened == []
    assert closed == {"refused": len(expected)}
    counts = packets_to(routed)
    assert set(counts) == {str(address) for address in routed.network}
    assert {address for address, count in counts.items() if count} == expected
    assert all(counts[address] == 1 for address in expected)


def test_a_silent_range_times_out_with_no_more_in_flight_than_allowed(
    method: BlockFunction, routed: Routed, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_rule(routed.link, SYN_RULE)
    tally = record_in_flight(monkeypatch)
    ports = (PORT, PORT + 1)
    sweep = Sweep(routed.network, ports, SEED)
    _, opened, closed = method(
        str(routed.network), ports, SEED, whole(sweep), **pace(max_in_flight=4, timeout_s=0.3)
    )
    assert opened == []
    assert closed == {"timeout": sweep.size}
    assert 0 < tally.most <= 4
    counts = packets_to(routed)
    assert sum(counts.values()) == sweep.size  # one SYN each, none sent again
    assert all(counts[address] == 2 for address in {p.address for p in sweep})


async def test_open_ports_across_a_link(method: BlockFunction, link: VethNamespace) -> None:
    """Over a veth (not loopback): another source address, checksums checked by the
    receiving stack; the beacons' ports open, a port nothing serves refused."""
    async with namespace_beacons(link, 3) as ports:
        swept = (*ports, max(ports) + 1)
        network = f"{link.inner_address}/32"
        sweep = Sweep(ipaddress.ip_network(network), swept, SEED)
        _, opened, closed = await asyncio.to_thread(
            method, network, swept, SEED, whole(sweep), **pace()
        )
    assert sorted(sweep._probe(p).port for p in opened) == sorted(ports)
    assert closed == {"refused": 1}

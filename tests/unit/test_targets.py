"""Sweeps cover every (address, port) exactly once, in a seeded order, in constant memory,
and resume from a checkpoint without repeating finished probes."""

from __future__ import annotations

import ipaddress
import itertools
import json
import tracemalloc

import pytest

from ronin.discovery.targets import Permutation, Sweep


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 65_536])
def test_the_permutation_is_a_bijection(size: int) -> None:
    permute = Permutation(size, seed=11)
    assert sorted(permute(p) for p in range(permute.domain)) == list(range(permute.domain))


@pytest.mark.parametrize(
    ("network", "ports", "hosts"),
    [
        ("192.168.1.0/24", (30437,), 254),
        ("10.0.0.0/30", (1, 2), 2),
        ("10.0.0.7/32", (80,), 1),
        ("10.0.0.6/31", (80,), 2),
        ("fd00::/120", (30437, 8080), 256),
    ],
)
def test_a_sweep_covers_every_probe_once(network: str, ports: tuple[int, ...], hosts: int) -> None:
    net = ipaddress.ip_network(network)
    sweep = Sweep(net, ports, seed=5)
    probes = [(p.address, p.port) for p in sweep]
    assert len(probes) == len(set(probes)) == hosts * len(ports)
    assert all(ipaddress.ip_address(a) in net for a, _ in probes)
    if net.version == 4 and net.num_addresses >= 4:
        assert str(net.network_address) not in {a for a, _ in probes}
        assert str(net.broadcast_address) not in {a for a, _ in probes}


def test_the_order_is_seeded_and_spread() -> None:
    net = ipaddress.ip_network("10.1.0.0/16")
    first = [p.address for p in itertools.islice(Sweep(net, (1,), seed=1), 100)]
    again = [p.address for p in itertools.islice(Sweep(net, (1,), seed=1), 100)]
    other = [p.address for p in itertools.islice(Sweep(net, (1,), seed=2), 100)]
    assert first == again != other
    # Not a walk through one corner of the range: the first 100 touch many /24s.
    assert len({a.rsplit(".", 1)[0] for a in first}) > 50


def test_a_slash_eight_is_never_materialised() -> None:
    tracemalloc.start()
    try:
        sweep = Sweep(ipaddress.ip_network("10.0.0.0/8"), (30437,), seed=3)
        for probe in itertools.islice(sweep, 50_000):
            sweep.finished(probe)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sweep.size == 2**24 - 2
    assert peak < 1_000_000


def test_a_resumed_sweep_repeats_only_what_was_in_flight() -> None:
    net = ipaddress.ip_network("192.168.7.0/24")
    everything = {(p.address, p.port) for p in Sweep(net, (1, 2), seed=9)}
    first = Sweep(net, (1, 2), seed=9)
    handed, done = [], set()
    for probe in itertools.islice(first, 200):
        handed.append(probe)
    for probe in handed[:150]:  # 50 still in flight when the worker dies
        first.finished(probe)
        done.add((probe.address, probe.port))
    checkpoint = first.checkpoint()
    assert len(checkpoint["in_flight"]) == 50

    second = Sweep(net, (1, 2), seed=9)
    second.resume(checkpoint)
    rest = [(p.address, p.port) for p in second]
    assert set(rest).isdisjoint(done)
    assert set(rest) | done == everything
    assert len(rest) == len(everything) - 150


def test_a_sweep_in_blocks_resumes_its_unfinished_blocks_and_open_probes() -> None:
    net = ipaddress.ip_network("10.9.0.0/22")
    everything = {(p.address, p.port) for p in Sweep(net, (1,), seed=4)}
    first = Sweep(net, (1,), seed=4)
    done_block = first.take_block(256)
    lost_block = first.take_block(256)
    assert done_block is not None
    assert lost_block is not None
    swept = list(first.probes_between(*done_block))
    opened = [swept[0].position, swept[1].position]
    found = first.block_done(done_block, opened, closed=len(swept) - 2)
    first.finished(found[0])  # fetched; found[1] was still being fetched
    checkpoint = json.loads(json.dumps(first.checkpoint()))  # as the database keeps it
    assert checkpoint["in_flight_blocks"] == [list(lost_block)]

    second = Sweep(net, (1,), seed=4)
    second.resume(checkpoint)
    again = [(p.address, p.port) for p in second.replayed()]
    assert again == [(found[1].address, found[1].port)]
    rest: list[tuple[str, int]] = []
    while (block := second.take_block(256)) is not None:
        rest += [(p.address, p.port) for p in second.probes_between(*block)]
    done = {(p.address, p.port) for p in swept} - set(again)
    assert set(rest).isdisjoint(done)
    assert set(rest) | done | set(again) == everything


@pytest.mark.parametrize(
    ("network", "ports"),
    [("10.0.0.0/22", (30437,)), ("10.0.0.0/30", (1, 2, 3)), ("fd00::/118", (80, 443))],
)
def test_targets_between_are_the_probes_between_in_their_order(
    network: str, ports: tuple[int, ...]
) -> None:
    sweep = Sweep(ipaddress.ip_network(network), ports, seed=99)
    for block in [(0, 7), (5, 300), (0, sweep._permutation.domain)]:
        assert [
            (position, str(ipaddress.ip_address(address)), port)
            for position, address, port in sweep.targets_between(*block)
        ] == [(p.position, p.address, p.port) for p in sweep.probes_between(*block)]

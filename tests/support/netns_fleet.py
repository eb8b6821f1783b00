"""Beacons inside a network namespace, and the packet filters that break their link.

A process lives in one network namespace, so the beacons of a namespace run in a child started
with ``ip netns exec`` (``python -m tests.support.netns_fleet HOST COUNT``): it serves COUNT
demo beacons on HOST (the namespace's end of the veth), each on a port of its own, prints their
ports as one JSON line, and serves until SIGTERM. ``namespace_beacons()`` starts and stops it.

The filters are iptables rules in the namespace's INPUT chain only: they drop what reaches the
beacons, never anything of this namespace. ``drop_syn`` is a partition (every new connection
times out), ``drop_randomly`` a lossy link; ``dropped`` counts the packets a rule dropped, so a
test can show that its loss happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Final

from ronin.beacon import BeaconServer, demo_descriptor
from tests.support.netns import COMMAND_TIMEOUT_S, VethNamespace

IPTABLES: Final = shutil.which("iptables") or "/usr/sbin/iptables"
#: Starting a Python child and binding its sockets: bounded, never a figure the test asserts.
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
SYN_RULE: Final = ("-p", "tcp", "--syn", "-j", "DROP")


def loss_rule(probability: float) -> tuple[str, ...]:
    """Drop each packet (whatever it is) with this probability."""
    return ("-m", "statistic", "--mode", "random", "--probability", f"{probability}", "-j", "DROP")


def iptables_reason() -> str | None:
    """Why packet filters cannot be set here, or None when they can."""
    return None if os.path.exists(IPTABLES) else f"no iptables command (looked for {IPTABLES})"


def _iptables(link: VethNamespace, *argv: str) -> str:
    completed = subprocess.run(
        link.command(IPTABLES, "-w", *argv),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise subprocess.CalledProcessError(
            completed.returncode, completed.args, completed.stdout, completed.stderr
        )
    return completed.stdout


def add_rule(link: VethNamespace, rule: tuple[str, ...]) -> None:
    """Append ``rule`` to the namespace's INPUT chain."""
    _iptables(link, "-A", "INPUT", *rule)


def remove_rule(link: VethNamespace, rule: tuple[str, ...]) -> None:
    """Delete ``rule`` from the namespace's INPUT chain."""
    _iptables(link, "-D", "INPUT", *rule)


def dropped(link: VethNamespace) -> int:
    """Packets the namespace's INPUT rules have dropped so far."""
    listing = _iptables(link, "-L", "INPUT", "-v", "-x", "-n")
    return sum(
        int(line.split()[0])
        for line in listing.splitlines()
        if len(line.split()) > 2 and line.split()[2] == "DROP"
    )


@contextlib.asynccontextmanager
async def namespace_beacons(link: VethNamespace, count: int) -> AsyncIterator[list[int]]:
    """``count`` beacons at ``link.inner_address`` in the namespace; their ports."""
    process = await asyncio.create_subprocess_exec(
        *link.command(
            sys.executable, "-m", "tests.support.netns_fleet", link.inner_address, str(count)
        ),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        if not line:
            raise RuntimeError("the namespace's beacons exited before serving")
        yield [int(port) for port in json.loads(line)]
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def serve(host: str, count: int) -> None:
    """Serve ``count`` demo beacons on ``host`` until SIGTERM; print their ports first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with BeaconServer() as server:
        keys = [await server.add(host, 0, demo_descriptor) for _ in range(count)]
        print(json.dumps([port for _, port in keys]), flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))

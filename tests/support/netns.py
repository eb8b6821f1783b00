"""A network namespace joined to this one by a veth pair: a private link that carries multicast.

The loopback interface carries no multicast, so mDNS tests need a link of their own. Each
``veth_namespace()`` makes a fresh one (a namespace with a unique name, a veth pair, a /30 from
10.0.0.0/8 that no interface or route here uses, a ULA /64, a multicast route inside) and
removes it afterwards, even when the test fails. A test that binds its mDNS sockets to the
root end's address only sends nothing anywhere but into its own namespace.

Needs root and ``ip netns``; ``unavailable_reason()`` says why not, for a ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

IP: Final = shutil.which("ip") or "/usr/sbin/ip"
#: Every ``ip`` command is local and quick; one that hangs is a broken machine.
COMMAND_TIMEOUT_S: Final = 10.0
_ATTEMPTS: Final = 32


@dataclass(frozen=True, slots=True)
class VethNamespace:
    """A namespace and the two ends of its link: ``root_*`` here, ``inner_*`` in there."""

    name: str
    root_interface: str
    inner_interface: str
    root_address: str
    inner_address: str
    root_address6: str
    inner_address6: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` to run inside the namespace (``ip netns exec`` execs it: same process)."""
        return [IP, "netns", "exec", self.name, *argv]


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return f"no ip command (looked for {IP})"
    try:
        _ip("netns", "list")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns is unavailable: {exc}"
    return None


@contextlib.contextmanager
def veth_namespace() -> Iterator[VethNamespace]:
    """A fresh namespace joined by a veth pair, torn down on the way out whatever happened."""
    tag = secrets.token_hex(4)
    network, network6 = _free_networks()
    root_address, inner_address = (str(host) for host in network.hosts())
    link = VethNamespace(
        name=f"ronin-mdns-{tag}",
        root_interface=f"rm{tag}r",
        inner_interface=f"rm{tag}n",
        root_address=root_address,
        inner_address=inner_address,
        root_address6=str(network6.network_address + 1),
        inner_address6=str(network6.network_address + 2),
    )
    try:
        _ip("netns", "add", link.name)
        _ip(
            "link", "add", link.root_interface, "type", "veth", "peer", "name", link.inner_interface
        )
        _ip("link", "set", link.inner_interface, "netns", link.name)
        _ip("addr", "add", f"{link.root_address}/30", "dev", link.root_interface)
        _ip("-6", "addr", "add", f"{link.root_address6}/64", "dev", link.root_interface, "nodad")
        _ip("link", "set", link.root_interface, "multicast", "on", "up")
        inside = ("-n", link.name)
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{link.inner_address}/30", "dev", link.inner_interface)
        _ip(
            *inside,
            *("-6", "addr", "add", f"{link.inner_address6}/64"),
            *("dev", link.inner_interface, "nodad"),
        )
        _ip(*inside, "link", "set", link.inner_interface, "multicast", "on", "up")
        _ip(*inside, "route", "add", "224.0.0.0/4", "dev", link.inner_interface)
        yield link
    finally:
        # Deleting either end deletes the pair; the namespace goes once its processes have.
        _ip_quietly("link", "del", link.root_interface)
        _ip_quietly("netns", "del", link.name)


def free_ipv4_network(prefix: int) -> ipaddress.IPv4Network:
    """A random network of 10.0.0.0/8 with ``prefix`` that no address or route here overlaps:
    a test routes it into a namespace of its own."""
    taken = [network for network in _networks_in_use() if network.version == 4]
    for _ in range(_ATTEMPTS):
        base = int(ipaddress.IPv4Address("10.0.0.0")) + secrets.randbelow(1 << 24)
        network = ipaddress.IPv4Network((base >> (32 - prefix) << (32 - prefix), prefix))
        if not any(network.overlaps(other) for other in taken):
            return network
    raise RuntimeError(f"no free /{prefix} in 10.0.0.0/8")


def _free_networks() -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """A random 10.x.y.z/30 and fdxx::/64 that no address or route on this machine overlaps."""
    taken = _networks_in_use()
    for _ in range(_ATTEMPTS):
        base = int(ipaddress.IPv4Address("10.0.0.0")) + secrets.randbelow(1 << 22) * 4
        network = ipaddress.IPv4Network((base, 30))
        if not any(network.overlaps(other) for other in taken if other.version == 4):
            break
    else:
        raise RuntimeError("no free /30 in 10.0.0.0/8")
    for _ in range(_ATTEMPTS):
        prefix = (0xFD << 120) | (secrets.randbits(56) << 64)
        network6 = ipaddress.IPv6Network((prefix, 64))
        if not any(network6.overlaps(other) for other in taken if other.version == 6):
            return network, network6
    raise RuntimeError("no free /64 in fd00::/8")


def _networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of every address and every (non-default) route in this namespace."""
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for interface in _ip_json("addr", "show"):
        for address in interface.get("addr_info", []):
            taken.append(
                ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", strict=False)
            )
    for family in ("-4", "-6"):
        for route in _ip_json(family, "route", "show"):
            with contextlib.suppress(ValueError):
                destination = ipaddress.ip_network(route.get("dst", ""), strict=False)
                if destination.prefixlen > 0:
                    taken.append(destination)
    return taken


def _ip(*argv: str) -> str:
    completed = subprocess.run(
        [IP, *argv], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        raise subprocess.CalledProcessError(
            completed.returncode, [IP, *argv], completed.stdout, completed.stderr
        )
    return completed.stdout


def _ip_json(*argv: str) -> Sequence[dict[str, Any]]:
    output = _ip("-j", *argv).strip()
    return json.loads(output) if output else []


def _ip_quietly(*argv: str) -> None:
    """Best effort, for teardown: the thing may already be gone."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([IP, *argv], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)

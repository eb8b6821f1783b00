"""mDNS / DNS-SD on a real link: advertisers in a network namespace, browsing from here.

Each test gets its own namespace joined to this one by a veth pair (``tests/support/netns.py``);
the advertisers run inside it (``tests/support/mdns_advertiser.py``), bound to its end of the
link, and everything here binds to the root end only, so no packet leaves for any other
interface. Instance names are random, so concurrent runs on the machine cannot be confused.
Every wait is bounded; nothing here measures time. The last tests need no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from ronin.discovery.descriptor import DESCRIPTOR_PATH, safe_path
from ronin.discovery.mdns import (
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    Instance,
    advertise,
    browse,
    decode_txt,
    txt_record,
)
from tests.support.netns import VethNamespace

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10.0
WINDOW_S = 2.0
#: How long a test watches for an event that should not come (never a threshold on speed).
QUIET_S = 1.5
NODE_ID = "did:kos:griot:7f3a9c"


def label(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def spec(link: VethNamespace, name: str, **overrides: Any) -> dict[str, Any]:
    """An advertiser's spec: a Griot on the namespace's end of the link, IPv4 and IPv6."""
    return {
        "name": name,
        "addresses": [link.inner_address, link.inner_address6],
        "port": 30437,
        "node_id": NODE_ID,
        "node_class": "Griot",
        "interface": link.inner_address,
        **overrides,
    }


async def stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, bytes]:
    """Signal an advertiser and wait for it (bounded); its exit status and stderr."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr


@contextlib.asynccontextmanager
async def advertisers(
    link: VethNamespace, *specs: dict[str, Any]
) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, str]]]:
    """Start one advertiser per spec in the namespace; each process and its instance's name.

    All start at once and are waited for together; on the way out each still running is
    stopped with SIGTERM (so it says goodbye).
    """
    processes = []
    try:
        for one in specs:
            argv = [sys.executable, "-m", "tests.support.mdns_advertiser", json.dumps(one)]
            processes.append(
                await asyncio.create_subprocess_exec(
                    *link.command(*argv),
                    cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        streams = [process.stdout for process in processes]
        assert all(streams)
        lines = await asyncio.wait_for(
            asyncio.gather(*(stream.readline() for stream in streams if stream)), WAIT_S
        )
        started = []
        for process, line in zip(processes, lines, strict=True):
            if not line.startswith(b"ready "):
                _, stderr = await stop(process, signal.SIGTERM)
                pytest.fail(f"an advertiser did not start: {stderr.decode()[-2000:]}")
            started.append((process, line.decode().removeprefix("ready ").strip()))
        yield started
    finally:
        for process in processes:
            await stop(process, signal.SIGTERM)


class Events:
    """The state changes an ``AsyncServiceBrowser`` reports, to wait on one at a time."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def __call__(
        self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.queue.put_nowait((name, state_change))

    async def wait_for(self, name: str, state: ServiceStateChange, within_s: float) -> None:
        """Return once ``name`` changes to ``state``; TimeoutError if not within ``within_s``."""
        async with asyncio.timeout(within_s):
            while (await self.queue.get()) != (name, state):
                pass


def mdns_sockets() -> list[Any]:
    """This process's sockets on the mDNS port: none once every zeroconf is closed."""
    return [c for c in psutil.Process().net_connections("udp") if c.laddr and c.laddr.port == 5353]


@contextlib.asynccontextmanager
async def listening(link: VethNamespace) -> AsyncIterator[Events]:
    """A browser of ``_kos._tcp.local.`` on the root end of the link, running throughout."""
    events = Events()
    async with AsyncZeroconf(interfaces=[link.root_address]) as aiozc:
        browser = AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[events])
        try:
            yield events
        finally:
            await browser.async_cancel()


# -- on the link ------------------------------------------------------------------------------


async def test_an_advertised_instance_is_found_with_its_addresses_port_and_txt(
    link: VethNamespace,
) -> None:
    name = label("griot")
    custom = spec(link, name, path="/kos/node.json")
    async with advertisers(link, custom) as [(_, full_name)]:
        found = await browse(WINDOW_S, interfaces=[link.root_address])
        assert mdns_sockets() == []  # browse closed its zeroconf
    assert full_name == f"{name}.{SERVICE_TYPE}"
    mine = [instance for instance in found if instance.name == full_name]
    assert len(mine) == 1, found  # IPv4 and IPv6: one instance, two addresses
    instance = mine[0]
    assert instance.port == 30437
    assert instance.addresses == (link.inner_address, link.inner_address6)
    assert instance.txt == {
        "txtvers": "1",
        "node_id": NODE_ID,
        "node_class": "Griot",
        "path": "/kos/node.json",
    }
    assert instance.descriptor_urls() == [
        f"http://{link.inner_address}:30437/kos/node.json",
        f"http://[{link.inner_address6}]:30437/kos/node.json",
    ]


async def test_a_beacon_that_exits_says_goodbye(link: VethNamespace) -> None:
    async with (
        listening(link) as events,
        advertisers(link, spec(link, label("skald"))) as [(process, full_name)],
    ):
        await events.wait_for(full_name, ServiceStateChange.Added, WAIT_S)
        assert await stop(process, signal.SIGTERM) == (0, b"")
        # The records' TTLs are minutes: a removal this soon can only be the goodbye.
        await events.wait_for(full_name, ServiceStateChange.Removed, WAIT_S)


async def test_a_beacon_killed_without_goodbye_stays_until_its_records_expire(
    link: VethNamespace,
) -> None:
    """The control for the test above: without a goodbye, the listener sees no removal."""
    async with (
        listening(link) as events,
        advertisers(link, spec(link, label("mzee"))) as [(process, full_name)],
    ):
        await events.wait_for(full_name, ServiceStateChange.Added, WAIT_S)
        returncode, _ = await stop(process, signal.SIGKILL)
        assert returncode == -signal.SIGKILL
        with pytest.raises(TimeoutError):
            await events.wait_for(full_name, ServiceStateChange.Removed, QUIET_S)


async def test_garbage_in_txt_records_does_not_break_browse(link: VethNamespace) -> None:
    junk = b"".join(
        bytes([len(item)]) + item
        for item in (
            b"txtvers=1",
            b"node_id=\xc3\x28not-utf-8",
            b"\xff\xfe=binary-key",
            b"node_class=Gri\x00ot",
            b"path=//evil.example/x",
            b"flag",
            b"",
            b"=no-key",
            b"TXTVERS=2",  # keys are case-insensitive: the first one counts
        )
    )
    junk += b"\xc8cut=short"  # announces 200 bytes, has 9
    hostile = spec(link, label("hostile"), raw_txt_hex=junk.hex(), port=30438)
    no_port = spec(link, label("portless"), raw_txt_hex=b"\x09txtvers=1".hex(), port=0)
    honest = spec(link, label("honest"))
    async with advertisers(link, hostile, no_port, honest) as started:
        found = await browse(WINDOW_S, interfaces=[link.root_address])
    by_name = {instance.name: instance for instance in found}
    hostile_name, no_port_name, honest_name = (name for _, name in started)
    assert by_name[honest_name].txt["node_id"] == NODE_ID
    assert no_port_name not in by_name
    instance = by_name[hostile_name]
    assert instance.txt == {"txtvers": "1", "path": "//evil.example/x", "flag": ""}
    assert instance.port == 30438
    assert instance.descriptor_urls() == [
        f"http://{link.inner_address}:30438{DESCRIPTOR_PATH}",
        f"http://[{link.inner_address6}]:30438{DESCRIPTOR_PATH}",
    ]


async def test_a_cancelled_browse_leaves_nothing_running(link: VethNamespace) -> None:
    browsing = asyncio.create_task(browse(WAIT_S, interfaces=[link.root_address]))
    await asyncio.sleep(0.2)
    browsing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(browsing, WAIT_S)
    assert mdns_sockets() == []
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []


async def test_browse_refuses_arguments_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="window_s"):
        await browse(-1.0)
    with pytest.raises(ValueError, match="window_s"):
        await browse(float("inf"))
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        await browse(0.1, interfaces=["eth0"])
    with pytest.raises(ValueError, match="not one string"):
        await browse(0.1, interfaces="10.0.0.1")
    with pytest.raises(OSError, match="usable address"):
        await browse(0.1, interfaces=["203.0.113.77"])  # TEST-NET-3: on no interface here


# -- no network -------------------------------------------------------------------------------


def instance(addresses: tuple[str, ...], **txt: str) -> Instance:
    return Instance(name=f"x.{SERVICE_TYPE}", addresses=addresses, port=8080, txt=txt)


def test_descriptor_urls_bracket_ipv6_and_use_the_default_path() -> None:
    assert instance(("10.0.0.5", "fd00::5", "fe80::1%eth0")).descriptor_urls() == [
        f"http://10.0.0.5:8080{DESCRIPTOR_PATH}",
        f"http://[fd00::5]:8080{DESCRIPTOR_PATH}",
        f"http://[fe80::1%25eth0]:8080{DESCRIPTOR_PATH}",
    ]
    assert instance(()).descriptor_urls() == []


def test_descriptor_urls_follow_a_safe_path() -> None:
    urls = instance(("10.0.0.5",), path="/kos/node%20one.json").descriptor_urls()
    assert urls == ["http://10.0.0.5:8080/kos/node%20one.json"]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "relative/path",
        "//evil.example/x",
        "/a b",
        "/a?b=c",
        "/a#frag",
        "/a\\b",
        "/a/../b",
        "/bad%zz",
        "/\x00",
        "/é",
        "/" + "a" * 300,
        "http://evil.example/",
    ],
)
def test_descriptor_urls_ignore_an_unsafe_path(path: str) -> None:
    assert safe_path(path) == DESCRIPTOR_PATH
    assert instance(("10.0.0.5",), path=path).descriptor_urls() == [
        f"http://10.0.0.5:8080{DESCRIPTOR_PATH}"
    ]


def test_txt_records_say_what_protocol_md_asks() -> None:
    assert txt_record(NODE_ID, "Griot") == {
        "txtvers": "1",
        "node_id": NODE_ID,
        "node_class": "Griot",
    }
    assert txt_record(NODE_ID, "Griot", "/kos")["path"] == "/kos"


def test_decode_txt_bounds_what_it_keeps() -> None:
    assert decode_txt(b"") == {}
    assert decode_txt(b"\x09txtvers=1" * (MAX_TXT_BYTES // 10 + 1)) == {}
    many = b"".join(bytes([len(item)]) + item for item in (b"k%d=v" % i for i in range(200)))
    assert len(decode_txt(many[:MAX_TXT_BYTES])) == 64
    assert decode_txt(b"\x03a=b\x05c") == {"a": "b"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name must be"),
        ({"name": "n" * 64}, "name must be"),
        ({"port": 0}, "port out of range"),
        ({"path": "//evil"}, "safe absolute path"),
        ({"node_id": "did:kos:" + "x" * 250}, "TXT node_id"),
        ({"node_class": "Gri\x00ot"}, "TXT node_class"),
        ({"host_address": "not-an-address"}, "does not appear"),
        ({"host_address": []}, "names no address"),
    ],
)
async def test_advertise_refuses_what_cannot_be_advertised(
    overrides: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "name": "griot",
        "host_address": "10.0.0.5",
        "port": 30437,
        "node_id": NODE_ID,
        "node_class": "Griot",
    } | overrides
    with pytest.raises(ValueError, match=message):
        async with advertise(**arguments):
            pytest.fail("advertised")

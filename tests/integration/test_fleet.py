"""The test fleet does what it says: honest beacons answer, hostile nodes misbehave as named.

Everything listens on 127.0.0.0/8, mostly on port 0 (the kernel picks), so these tests can run
beside any other. Every wait is bounded; nothing here measures time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import json
import os
import signal
import struct
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ronin.beacon import DESCRIPTOR_PATH, BeaconServer, descriptor_url
from tests.support.fleet import (
    BEHAVIOURS,
    GZIP_BOMB_SIZE,
    HUGE_SIZE,
    ConnectionRecorder,
    HostileServer,
    addresses,
    chain,
    ensure_fd_limit,
    free_port,
    gzip_bomb,
    honest_fleet,
    until,
)

WAIT_S = 10.0
BLOCKED_S = 0.2  # how long a test watches a node that should stay silent (never a threshold)
HOSTILE_NET = "127.42.66"


def timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=WAIT_S)


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    async with HostileServer() as server:
        yield server


@contextlib.asynccontextmanager
async def raw_get(
    host: str, port: int, path: str = DESCRIPTOR_PATH
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection that has sent one GET; closed (aborted) on the way out."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), WAIT_S)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept-Encoding: gzip\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-cased names) of a response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    return await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT_S)


# -- addresses and honest beacons -------------------------------------------------------------


def test_addresses_are_spread_deterministically_over_the_network() -> None:
    chosen = addresses("127.42.0.0/20", 256, seed=7)
    assert chosen == addresses("127.42.0.0/20", 256, seed=7)
    assert chosen != addresses("127.42.0.0/20", 256, seed=8)
    assert len(set(chosen)) == 256
    network = ipaddress.ip_network("127.42.0.0/20")
    ips = [ipaddress.ip_address(a) for a in chosen]
    assert all(ip in network for ip in ips)
    assert network.network_address not in ips
    assert network.broadcast_address not in ips
    assert ips == sorted(ips)
    assert len({ip.packed[2] for ip in ips}) > 8  # spread over the /20, not packed at its start
    assert len(addresses("127.42.0.0/30", 2)) == 2
    with pytest.raises(ValueError, match="has 2 host addresses"):
        addresses("127.42.0.0/30", 3)


async def test_256_beacons_in_one_server_each_serve_their_own_document() -> None:
    hosts = addresses("127.42.0.0/20", 256, seed=1)
    port = free_port(hosts[0])
    async with BeaconServer() as server:
        fleet = await honest_fleet(server, hosts, port, peers=chain(len(hosts)))
        assert server.beacons == [beacon.key for beacon in fleet]
        picked = [fleet[0], fleet[100], fleet[255]]
        async with aiohttp.ClientSession(timeout=timeout()) as session:
            for beacon in picked:
                async with session.get(beacon.descriptor_url) as response:
                    assert response.status == 200
                    assert response.content_type == "application/json"
                    assert await response.json() == beacon.descriptor
                    assert await response.read() == server.body(beacon.key)
            async with session.get(fleet[0].descriptor_url) as response:
                assert response.status == 200
            async with session.head(fleet[1].descriptor_url) as response:
                assert response.status == 200
            async with session.get(f"{fleet[2].url}/elsewhere") as response:
                assert response.status == 404
            async with session.post(fleet[3].descriptor_url, data=b"{}") as response:
                assert response.status == 405
                assert response.headers["Allow"] == "GET, HEAD"
        assert server.requests == {fleet[0].key: 2, fleet[100].key: 1, fleet[255].key: 1}
    assert fleet[0].descriptor["peers"] == [fleet[1].url]
    assert fleet[255].descriptor["peers"] == []
    assert {beacon.descriptor["node_class"] for beacon in fleet[:13]} == {
        beacon.descriptor["node_class"] for beacon in fleet
    }
    assert len({beacon.node_id for beacon in fleet}) == 256


async def test_4096_beacons_fit_in_one_process() -> None:
    ensure_fd_limit(4096 + 512)
    hosts = addresses("127.43.0.0/16", 4096, seed=2)
    port = free_port(hosts[0])
    async with BeaconServer() as server:
        fleet = await honest_fleet(server, hosts, port)
        async with aiohttp.ClientSession(timeout=timeout()) as session:
            for beacon in fleet[::1000]:
                async with session.get(beacon.descriptor_url) as response:
                    assert await response.json() == beacon.descriptor
        assert sum(server.requests.values()) == len(fleet[::1000])


async def test_a_beacon_on_port_0_names_its_port_and_close_drops_idle_clients() -> None:
    async with BeaconServer() as server:
        key = await server.add("127.42.77.1", 0, lambda host, port: {"node_id": f"{host}:{port}"})
        with pytest.raises(OSError, match="address already in use"):
            await server.add("127.42.77.1", key[1], b"{}")
        async with aiohttp.ClientSession(timeout=timeout()) as session:
            async with session.get(descriptor_url(*key)) as response:
                assert await response.json() == {"node_id": f"127.42.77.1:{key[1]}"}
            # The session keeps its connection alive: close() must not wait for it.
            await asyncio.wait_for(server.close(), WAIT_S)
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(descriptor_url(*key))
        with pytest.raises(RuntimeError, match="closed"):
            await server.add("127.42.77.2", 0, b"{}")
    assert server.requests == {key: 1}


# -- hostile nodes ----------------------------------------------------------------------------


async def test_unknown_behaviours_and_options_are_refused(hostile: HostileServer) -> None:
    with pytest.raises(ValueError, match="unknown behaviour"):
        await hostile.add(f"{HOSTILE_NET}.1", 0, "polite")
    with pytest.raises(TypeError, match="takes no option"):
        await hostile.add(f"{HOSTILE_NET}.1", 0, "hang", size=3)
    with pytest.raises(TypeError, match="needs location"):
        await hostile.add(f"{HOSTILE_NET}.1", 0, "redirect_out_of_scope")


async def test_refuse_refuses(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.2", 0, "refuse")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(*key), WAIT_S)
    assert hostile.connections[key] == 0


async def test_reset_resets(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.3", 0, "reset")
    async with raw_get(*key) as (reader, _):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), WAIT_S)
    assert hostile.connections[key] == 1


async def test_hang_accepts_and_never_answers(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.4", 0, "hang")
    async with raw_get(*key) as (reader, _):
        assert await until(lambda: hostile.connections[key] == 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), BLOCKED_S)


async def test_slow_drip_sends_headers_then_a_byte_at_a_time(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.5", 0, "slow_drip", interval_s=0.005)
    async with raw_get(*key) as (reader, _):
        status, headers = await read_head(reader)
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert "content-length" not in headers
        assert "transfer-encoding" not in headers
        assert await asyncio.wait_for(reader.readexactly(8), WAIT_S) == b'{"kos":"'


async def test_endless_is_a_chunked_body_that_does_not_end(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.6", 0, "endless")
    async with (
        aiohttp.ClientSession(timeout=timeout()) as session,
        session.get(descriptor_url(*key)) as response,
    ):
        assert response.headers["Transfer-Encoding"] == "chunked"
        received = 0
        while received < 8 * 1024 * 1024:  # many times PROTOCOL's 1 MiB, and still going
            chunk = await response.content.read(1024 * 1024)
            assert chunk
            received += len(chunk)


async def test_huge_announces_and_sends_50_mb_of_json(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.7", 0, "huge")
    async with raw_get(*key) as (reader, _):
        _, headers = await read_head(reader)
        assert int(headers["content-length"]) == HUGE_SIZE == 50 * 1024 * 1024
        assert (await reader.readexactly(8)) == b'{"kos":"'
    small = await hostile.add(f"{HOSTILE_NET}.8", 0, "huge", size=3 * 1024 * 1024)
    async with raw_get(*small) as (reader, _):
        _, headers = await read_head(reader)
        document = json.loads(await read_body(reader, headers))
        assert document["kos"] == "1.0"


async def test_gzip_bomb_is_a_small_gzip_that_inflates_to_a_gigabyte(
    hostile: HostileServer,
) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.9", 0, "gzip_bomb")
    async with raw_get(*key) as (reader, _):
        _, headers = await read_head(reader)
        assert headers["content-encoding"] == "gzip"
        body = await read_body(reader, headers)
    assert body[:3] == b"\x1f\x8b\x08"
    assert len(body) < 2 * 1024 * 1024
    assert struct.unpack("<I", body[-4:])[0] == GZIP_BOMB_SIZE  # ISIZE: what it inflates to
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    head = inflater.decompress(body, 16 * 1024 * 1024)
    assert len(head) == 16 * 1024 * 1024
    assert head.startswith(b'{"kos":"1.0"')
    consumed = len(body) - len(inflater.unconsumed_tail)
    assert len(head) / consumed > 500
    # A small one, inflated to the end: the stream, CRC and size are all valid gzip.
    assert json.loads(gzip.decompress(gzip_bomb(3 * 1024 * 1024)))["kos"] == "1.0"


async def test_content_behaviours_serve_what_they_are_named_for(hostile: HostileServer) -> None:
    documents = {}
    for index, behaviour in enumerate(
        ["invalid_json", "wrong_types", "nul_bytes", "overlong_ids", "overlong_node_class"]
    ):
        key = await hostile.add(f"{HOSTILE_NET}.{20 + index}", 0, behaviour)
        async with raw_get(*key) as (reader, _):
            status, headers = await read_head(reader)
            assert (status, headers["content-type"]) == (200, "application/json")
            documents[behaviour] = await read_body(reader, headers)
    with pytest.raises(json.JSONDecodeError):
        json.loads(documents["invalid_json"])
    wrong = json.loads(documents["wrong_types"])
    assert wrong["node_id"] == 42
    assert wrong["services"] == "lots"
    assert b"\\u0000" in documents["nul_bytes"]
    nul = json.loads(documents["nul_bytes"])
    assert "\x00" in nul["node_class"]
    assert "\x00" in nul["services"][0]["service_id"]
    overlong = json.loads(documents["overlong_ids"])
    assert next(len(s["service_id"]) for s in overlong["services"]) == 300
    assert len(overlong["services"][1]["service_id"]) <= 255
    assert overlong["node_class"] == "Griot"
    assert len(json.loads(documents["overlong_node_class"])["node_class"]) == 101


async def test_redirect_loop_redirects_to_itself_forever(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.30", 0, "redirect_loop")
    async with raw_get(*key) as (reader, _):
        status, headers = await read_head(reader)
        assert (status, headers["location"]) == (302, descriptor_url(*key))
    # aiohttp raises on the max_redirects-th redirect *response*, without following it: to
    # follow PROTOCOL's "at most 3" redirects, max_redirects is 4.
    async with aiohttp.ClientSession(timeout=timeout()) as session:
        with pytest.raises(aiohttp.TooManyRedirects):
            await session.get(descriptor_url(*key), max_redirects=4)
    assert hostile.connections[key] == 1 + 1 + 3  # the raw GET, the first GET, 3 redirects


async def test_redirect_out_of_scope_points_at_a_recorder_that_sees_nothing(
    hostile: HostileServer,
) -> None:
    async with ConnectionRecorder() as recorder:
        outside = await recorder.add("127.200.0.1")
        key = await hostile.add(
            f"{HOSTILE_NET}.31", 0, "redirect_out_of_scope", location=descriptor_url(*outside)
        )
        async with raw_get(*key) as (reader, _):
            status, headers = await read_head(reader)
        assert (status, headers["location"]) == (302, descriptor_url(*outside))
        assert recorder.connections[outside] == 0
        # The witness works: a connection to it is counted.
        _, writer = await asyncio.wait_for(asyncio.open_connection(*outside), WAIT_S)
        writer.transport.abort()
        assert await until(lambda: recorder.total == 1)


@pytest.mark.parametrize(
    ("behaviour", "status", "content_type"),
    [("not_json_content_type", 200, "text/html; charset=utf-8"), ("http_500", 500, "text/plain")],
)
async def test_http_errors_and_html(
    hostile: HostileServer, behaviour: str, status: int, content_type: str
) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.40", 0, behaviour)
    async with raw_get(*key) as (reader, _):
        got_status, headers = await read_head(reader)
        assert (got_status, headers["content-type"]) == (status, content_type)
        assert await read_body(reader, headers)


async def test_bad_http_is_not_http(hostile: HostileServer) -> None:
    key = await hostile.add(f"{HOSTILE_NET}.41", 0, "bad_http")
    async with raw_get(*key) as (reader, _):
        first = await asyncio.wait_for(reader.readline(), WAIT_S)
        assert not first.startswith(b"HTTP/")
    async with aiohttp.ClientSession(timeout=timeout()) as session:
        with pytest.raises(aiohttp.ClientResponseError):
            await session.get(descriptor_url(*key))


async def test_close_is_prompt_whatever_the_clients_left_open() -> None:
    async with HostileServer() as hostile:
        keys = {
            behaviour: await hostile.add(f"{HOSTILE_NET}.{50 + index}", 0, behaviour)
            for index, behaviour in enumerate(BEHAVIOURS)
            if behaviour != "redirect_out_of_scope"
        }
        stuck = []
        try:
            for behaviour in ("hang", "slow_drip", "endless", "huge", "gzip_bomb"):
                opening = asyncio.open_connection(*keys[behaviour])
                _, writer = await asyncio.wait_for(opening, WAIT_S)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                stuck.append(writer)
            assert await until(lambda: sum(hostile.connections.values()) == len(stuck))
            await asyncio.wait_for(hostile.close(), WAIT_S)
        finally:
            for writer in stuck:
                writer.transport.abort()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(*keys["hang"]), WAIT_S)


# -- ronin beacon, the command ----------------------------------------------------------------


async def start_beacon(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RONIN_", "PG"))}
    # A database it could not reach and a data dir it must not fill: a beacon opens neither.
    environment |= {
        "RONIN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
        "RONIN_DATA_DIR": str(tmp_path / "data"),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ronin",
        "beacon",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_beacon(process: asyncio.subprocess.Process, signum: int) -> tuple[int, bytes]:
    process.send_signal(signum)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_ronin_beacon_serves_a_demo_node_until_signalled(tmp_path: Path, signum: int) -> None:
    port = free_port("127.3.3.3")
    process = await start_beacon(
        tmp_path,
        *("--host", "127.3.3.3", "--port", str(port), "--node-class", "Tohunga"),
        *("--capability", "ritual_scheduling", "--capability", "teaching"),
        *("--peer", "did:kos:griot:7f3a9c", "--peer", "http://127.3.3.4:30437"),
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = f"http://127.3.3.3:{port}{DESCRIPTOR_PATH}"
        assert line.startswith("beacon did:kos:tohunga:")
        assert line.endswith(f" serving {url}\n")
        async with (
            aiohttp.ClientSession(timeout=timeout()) as session,
            session.get(url) as response,
        ):
            assert response.content_type == "application/json"
            document = await response.json()
        assert line.split()[1] == document["node_id"]
        assert document["node_class"] == "Tohunga"
        assert document["services"][0]["capabilities"] == ["ritual_scheduling", "teaching"]
        assert document["services"][0]["endpoint"] == f"http://127.3.3.3:{port}/klf"
        assert document["peers"] == ["did:kos:griot:7f3a9c", "http://127.3.3.4:30437"]
    finally:
        returncode, stderr = await stop_beacon(process, signum)
    assert (returncode, stderr) == (0, b"")
    assert not (tmp_path / "data").exists()


async def test_ronin_beacon_serves_a_file_verbatim(tmp_path: Path) -> None:
    document = tmp_path / "node.json"
    document.write_bytes(b'{"kos": "1.0", "node_id": "did:kos:mzee:file", "services": []}\n')
    process = await start_beacon(
        tmp_path, "--host", "127.3.3.3", "--port", "0", "--descriptor", str(document)
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("beacon did:kos:mzee:file serving http://127.3.3.3:")
        async with (
            aiohttp.ClientSession(timeout=timeout()) as session,
            session.get(line.split()[-1]) as response,
        ):
            assert await response.read() == document.read_bytes()
    finally:
        returncode, stderr = await stop_beacon(process, signal.SIGTERM)
    assert (returncode, stderr) == (0, b"")

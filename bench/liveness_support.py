"""What the liveness benchmark stands on: a fleet of beacons that die one by one, the map seeded
from it, the verifying process, and the PostgreSQL server's processes.

The verifying process is ``ronin worker`` (``VERIFY_COMMAND``), configured by its settings
(``RONIN_DATABASE_URL``, ``RONIN_VERIFY_INTERVAL_S``, ``RONIN_VERIFY_GUARD_FRACTION``,
``RONIN_ALLOW``); no job is queued, so it only verifies (and polls the empty queue). Its log
says when the partition guard begins to hold (the line ``GUARD_EVENT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from psycopg_pool import AsyncConnectionPool

from bench.harness import ROOT, BenchError, Connection, cpu_of, log_tail, stop_process
from ronin.beacon import BeaconServer, ServiceSpec, base_url, descriptor_url, make_descriptor
from ronin.discovery.http_probe import Fetched, fetch_descriptor, new_session
from ronin.discovery.policy import ScopePolicy, parse_networks
from ronin.discovery.sightings import observe
from ronin.store.services import ServiceMap
from tests.support.fleet import addresses, ensure_fd_limit

#: Loopback "machines" of the fleet: room for 4,094 nodes.
NETWORK = "127.61.0.0/20"
#: The verifying process: a real worker, which verifies beside its jobs (none are queued).
VERIFY_COMMAND = [sys.executable, "-m", "ronin", "worker"]
GUARD_EVENT = "partition guard holds"
SEED_CONCURRENCY = 64
UPSERT_CHUNK = 2_000
READY_TIMEOUT_S = 60.0


# --- The fleet -------------------------------------------------------------------------------


def node_descriptor(host: str, port: int, services: int) -> dict[str, Any]:
    """A node at ``host:port`` announcing ``services`` services, ids derived from its address."""
    short = hashlib.sha256(f"{host}:{port}".encode()).hexdigest()[:12]
    endpoint = f"{base_url(host, port)}/klf"
    specs = [
        ServiceSpec(f"did:kos:service:{short}:s{rank}", endpoint, ("bench.liveness",))
        for rank in range(services)
    ]
    return make_descriptor(f"did:kos:griot:{short}", "Griot", specs)


class Fleet:
    """Beacons on loopback addresses, one server each, so that each can die alone."""

    def __init__(self, nodes: int, services: int, *, seed: int = 61) -> None:
        self.hosts = addresses(NETWORK, nodes, seed=seed)
        self.services = services
        self.keys: list[tuple[str, int]] = []
        self._servers: list[BeaconServer] = []
        self.node_ids: list[str] = []

    async def start(self) -> None:
        """Every node listening (on a free port of its address)."""
        ensure_fd_limit(len(self.hosts) * 2 + 1024)
        for host in self.hosts:
            server = BeaconServer()
            key = await server.add(host, 0, partial(node_descriptor, services=self.services))
            self._servers.append(server)
            self.keys.append(key)
            self.node_ids.append(str(node_descriptor(*key, self.services)["node_id"]))

    def kill(self, index: int) -> tuple[float, asyncio.Task[None]]:
        """Stop node ``index`` listening now: when (wall clock), and the task closing it."""
        killed_at = time.time()
        return killed_at, asyncio.ensure_future(self._servers[index].close())

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self._servers))


async def seed_map(pool: AsyncConnectionPool[Connection], urls: Sequence[str], allow: str) -> int:
    """Put the nodes at ``urls`` in the map as a crawl does (fetch, sightings, upsert); how many
    services that made."""
    policy = ScopePolicy(parse_networks(allow, field="RONIN_ALLOW"))
    limit = asyncio.Semaphore(SEED_CONCURRENCY)
    async with new_session(policy, concurrency=SEED_CONCURRENCY) as session:

        async def one(url: str) -> Fetched:
            async with limit:
                fetched = await fetch_descriptor(session, url, policy, total_timeout_s=30.0)
            if not isinstance(fetched, Fetched):
                raise BenchError(f"seeding: {url} did not answer: {fetched}")
            return fetched

        found = await asyncio.gather(*(one(url) for url in urls))
    sightings = [
        sighting
        for rank, fetched in enumerate(found)
        for sighting in observe(
            fetched,
            discovery_method="http_probe",
            job_id=uuid.uuid4(),
            rank=(0, 0, rank),
            seen_at=datetime.now().astimezone(),
        ).sightings
    ]
    service_map = ServiceMap(pool, freshness_window=timedelta(days=1))
    for start in range(0, len(sightings), UPSERT_CHUNK):
        await service_map.upsert(sightings[start : start + UPSERT_CHUNK])
    return len(sightings)


def fleet_urls(keys: Sequence[tuple[str, int]]) -> list[str]:
    return [descriptor_url(host, port) for host, port in keys]


# --- The verifying process -------------------------------------------------------------------


@dataclass
class VerifyingProcess:
    """A running verifier: its process and its log."""

    process: asyncio.subprocess.Process
    log: Path
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def guard_events(self) -> int:
        """How many times its log says the partition guard began to hold."""
        return log_tail(self.log, chars=10_000_000).count(GUARD_EVENT)


@asynccontextmanager
async def verifying(env: dict[str, str], log: Path) -> AsyncIterator[VerifyingProcess]:
    """The verifying process, stopped (SIGTERM) on the way out whatever happened."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            *VERIFY_COMMAND,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=descriptor,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(descriptor)
    running = VerifyingProcess(process, log)
    try:
        yield running
    finally:
        running.exit_code = await stop_process(process)
    if running.exit_code not in (0, -signal.SIGTERM):
        raise BenchError(f"the verifier exited {running.exit_code}:\n{log_tail(log)}")


# --- PostgreSQL's processes ------------------------------------------------------------------


@dataclass
class ServerProcesses:
    """The server's processes (the postmaster's children), to meter their CPU: those alive at
    the start by difference, those born meanwhile whole. ``excluded``: the benchmark's own
    connections."""

    postmaster: psutil.Process
    excluded: set[int]
    start: dict[int, float] = field(default_factory=dict)

    def children(self) -> list[psutil.Process]:
        try:
            return [p for p in self.postmaster.children() if p.pid not in self.excluded]
        except psutil.Error:
            return []

    def begin(self) -> None:
        self.start = {p.pid: cpu_of(p).total_s for p in self.children()}

    def used_s(self) -> float:
        """CPU seconds its processes used since ``begin`` (those still alive)."""
        return sum(cpu_of(p).total_s - self.start.get(p.pid, 0.0) for p in self.children())


async def server_processes(conn: Connection) -> ServerProcesses | None:
    """The local server's processes, seen from one of the benchmark's connections (which is
    excluded); None if the server is not on this machine."""
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    with contextlib.suppress(psutil.Error):
        postmaster = psutil.Process(psutil.Process(int(row[0])).ppid())
        if "postgres" in postmaster.name() or "postmaster" in postmaster.name():
            return ServerProcesses(postmaster, {int(row[0])})
    return None

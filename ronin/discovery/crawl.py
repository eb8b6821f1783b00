"""Discovery, the job: sweep the target, fetch descriptors, follow peers to depth, and put
what it finds into the map as it goes.

Level 1 is the target itself (every address x port of a CIDR, or the one node a domain or
DID names). Level n+1 is the peers of the nodes found at level n, up to ``depth``; no
address is probed twice in a job and every peer goes through the scope policy. Services are
written in batches while the job runs, so a crash keeps what was found; the checkpoint saved
with each progress report lets a re-claimed job resume instead of starting over.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ronin import metrics
from ronin.discovery.descriptor import NodeDescriptor
from ronin.discovery.http_probe import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Failed,
    Fetched,
    descriptor_url,
    fetch_descriptor,
    new_session,
)
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.sweep import RateLimit, open_ports
from ronin.discovery.targets import Probe, Sweep
from ronin.jobs.context import JobContext
from ronin.jobs.executor import ScanFailed
from ronin.store.models import ServiceFilter, Sighting

DEFAULT_CONCURRENCY = 256
DEFAULT_RATE = 1000.0
MAX_PEER_PROBES = 10_000
FLUSH_INTERVAL_S = 0.5
FLUSH_SIZE = 500
REPORT_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """How hard a job may push: the defaults are ones a home network survives."""

    policy: ScopePolicy
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = DEFAULT_RATE
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S


class Crawl:
    """One attempt of one discovery job."""

    def __init__(self, context: JobContext, options: DiscoveryOptions) -> None:
        self.context = context
        self.options = options
        self.params = context.params
        resume = context.resume or {}
        self.level: int = resume.get("level", 1)
        self.frontier: list[str] = list(resume.get("frontier", []))
        self.next_frontier: list[str] = list(resume.get("next_frontier", []))
        self.visited: set[str] = set(resume.get("visited", []))
        self.stats: dict[str, int] = {"hosts_probed": 0, "nodes": 0} | resume.get("stats", {})
        self.sweep: Sweep | None = None
        self._sweep_checkpoint: dict[str, Any] | None = resume.get("sweep")
        self._pending: list[Sighting] = []
        self._last_flush = time.monotonic()
        self._rate = RateLimit(options.rate)

    async def run(self) -> dict[str, Any]:
        """Run the job to its end; the extra result fields (stats) it reports."""
        supported = [p for p in self.params.protocols if p == "http-api"]
        for protocol in self.params.protocols:
            if protocol != "http-api":
                self.context.probe_failed(f"unsupported_protocol:{protocol}")
        if not supported:
            raise ScanFailed("none of the requested protocols is supported yet (use http-api)")
        self._check_target_scope()
        session = new_session(
            self.options.policy,
            concurrency=self.options.concurrency,
            connect_timeout_s=self.options.connect_timeout_s,
            total_timeout_s=self.options.total_timeout_s,
        )
        async with session:
            self.session = session
            while self.level <= self.params.depth:
                if self.level == 1:
                    await self._first_level()
                else:
                    await self._peer_level()
                if not self.next_frontier:
                    break
                self.level += 1
                self.frontier, self.next_frontier = self.next_frontier, []
                await self._report(force=True)
        await self._flush()
        await self._report(force=True, message="done")
        return {"stats": self.stats}

    def _check_target_scope(self) -> None:
        """FORBIDDEN_TARGET before the first packet (PROTOCOL.md section 6)."""
        if self.params.target_type == "network_cidr":
            self.options.policy.check_target(ipaddress.ip_network(self.params.target))

    async def _first_level(self) -> None:
        if self.params.target_type == "network_cidr":
            await self._sweep_network()
            return
        if self.level == 1 and not self.frontier:
            self.frontier = await self._initial_urls()
        await self._peer_level()

    async def _initial_urls(self) -> list[str]:
        target = self.params.target
        if self.params.target_type == "domain":
            return [f"https://{target}"]
        if target.startswith("did:kos:"):
            urls = await self._known_endpoints(target)
            if not urls:
                raise ScanFailed(f"{target} is not in the map: no endpoint to probe")
            return urls
        raise ScanFailed("did:web resolution is not supported yet")

    async def _sweep_network(self) -> None:
        network = ipaddress.ip_network(self.params.target)
        seed = zlib.crc32(self.context.job_id.bytes)
        self.sweep = Sweep(network, self.params.ports, seed)
        if self._sweep_checkpoint:
            self.sweep.resume(self._sweep_checkpoint)
        fetches: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.options.concurrency)

        def closed(reason: str, count: int) -> None:
            self.stats["hosts_probed"] += count
            self.stats[f"closed_{reason}"] = self.stats.get(f"closed_{reason}", 0) + count

        async def fetch(probe: Probe) -> None:
            try:
                url = f"http://{_host(probe.address)}:{probe.port}"
                await self._probe(url, discovery_method="http_probe")
            finally:
                assert self.sweep is not None
                self.sweep.finished(probe)
                slots.release()

        # Progress (and the checkpoint) on a clock, not per node found: a range where nothing
        # answers must still record how far it got.
        ticker = asyncio.create_task(self._report_every(REPORT_INTERVAL_S), name="progress")
        try:
            async for probe in open_ports(
                self.sweep,
                concurrency=self.options.concurrency,
                rate=self._rate,
                connect_timeout_s=self.options.connect_timeout_s,
                on_closed=closed,
            ):
                if ticker.done():
                    ticker.result()  # a lost lease stops the sweep here
                await slots.acquire()
                task = asyncio.create_task(fetch(probe))
                fetches.add(task)
                task.add_done_callback(fetches.discard)
            if fetches:
                await asyncio.gather(*fetches)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            for task in fetches:
                task.cancel()
        self._sweep_checkpoint = None

    async def _report_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._report()

    async def _peer_level(self) -> None:
        method = "http_probe" if self.level == 1 else "peer_referral"
        slots = asyncio.Semaphore(self.options.concurrency)

        async def one(url: str) -> None:
            async with slots:
                await self._rate.wait()
                await self._probe(url, discovery_method=method)
                self.frontier.remove(url)
                await self._report()

        await asyncio.gather(*(one(url) for url in list(self.frontier)))

    async def _probe(self, url: str, *, discovery_method: str) -> None:
        """Fetch one node's descriptor and record its services; a failure is counted."""
        self.stats["hosts_probed"] += 1
        self.visited.add(_node_key(url))
        with metrics.PROBE_SECONDS.time():
            result = await fetch_descriptor(
                self.session,
                descriptor_url(url),
                self.options.policy,
                total_timeout_s=self.options.total_timeout_s,
            )
        if isinstance(result, Failed):
            self.context.probe_failed(result.reason)
            metrics.probe_failed(result.reason)
            return
        metrics.probe_succeeded()
        self.stats["nodes"] += 1
        self._add_sightings(result, discovery_method)
        for _, reason in result.descriptor.skipped:
            self.context.probe_failed(f"skipped:{reason}")
        if self.level < self.params.depth:
            await self._queue_peers(result.descriptor)
        await self._flush_if_due()

    def _add_sightings(self, fetched: Fetched, discovery_method: str) -> None:
        node, now = fetched.descriptor, datetime.now(UTC)
        for service in node.services:
            metadata: dict[str, Any] = {
                "discovery_method": discovery_method,
                "response_time_ms": fetched.response_time_ms,
                "job_id": str(self.context.job_id),
                "protocols": list(service.protocols),
                "descriptor_url": fetched.url,
            }
            if node.hieros_compliance is not None:
                metadata["hieros_compliance"] = node.hieros_compliance
            self._pending.append(
                Sighting(
                    service_id=service.service_id,
                    node_id=node.node_id,
                    node_class=node.node_class,
                    endpoint=service.endpoint,
                    capabilities=service.capabilities,
                    seen_at=now,
                    metadata=metadata,
                )
            )

    async def _queue_peers(self, node: NodeDescriptor) -> None:
        for peer in node.peers:
            urls = await self._known_endpoints(peer) if peer.startswith("did:") else [peer]
            for url in urls:
                key = _node_key(url)
                if key in self.visited or self._swept(url):
                    continue
                if not self._in_scope(url):
                    self.context.probe_failed("peer_out_of_scope")
                    self.visited.add(key)
                    continue
                if len(self.visited) >= MAX_PEER_PROBES:
                    self.context.probe_failed("peer_limit")
                    continue
                self.visited.add(key)
                self.next_frontier.append(url)

    async def _known_endpoints(self, did: str) -> list[str]:
        """A did:kos node's endpoints, from the map (PROTOCOL.md section 4)."""
        if not did.startswith("did:kos:"):
            self.context.probe_failed("unresolvable_did")
            return []
        page = await self.context.services.find(ServiceFilter(node_id=did), limit=20)
        bases = {descriptor_url(s.endpoint) for s in page.items if _is_http(s.endpoint)}
        return sorted(url.removesuffix("/.well-known/kos-node") for url in bases)

    def _swept(self, url: str) -> bool:
        """True when level 1's sweep already covered this address and port."""
        if self.params.target_type != "network_cidr":
            return False
        parts = urlsplit(url)
        try:
            address = ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (
            parts.scheme == "http"
            and address in ipaddress.ip_network(self.params.target)
            and port in self.params.ports
        )

    def _in_scope(self, url: str) -> bool:
        host = urlsplit(url).hostname or ""
        try:
            return self.options.policy.allows(ipaddress.ip_address(host))
        except ValueError:
            return True  # a name: the scoped resolver checks each address it resolves to

    async def _flush_if_due(self) -> None:
        if len(self._pending) >= FLUSH_SIZE or (
            self._pending and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S
        ):
            await self._flush()

    async def _flush(self) -> None:
        """Write buffered sightings to the map, linked to this job."""
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if batch:
            await self.context.record(batch)

    async def _report(self, *, force: bool = False, message: str | None = None) -> None:
        """Progress, with the checkpoint a re-claimed attempt resumes from."""
        depth = self.params.depth
        within = self.sweep.fraction_done if self.sweep and self.level == 1 else 0.0
        percent = int(100 * ((self.level - 1) + within) / depth) if message != "done" else 100
        text = message or (
            f"level {self.level}/{depth}: {self.stats['hosts_probed']} probed, "
            f"{self.stats['nodes']} nodes"
        )
        if not (force or self.context.progress_due()):
            return
        # The checkpoint first, then the flush: every probe it counts as done has its
        # sightings written before the checkpoint is, so a crash between the two repeats
        # probes rather than losing what they found.
        checkpoint = self._checkpoint()
        await self._flush()
        await self.context.progress(
            min(percent, 99 if message != "done" else 100), text, resume=checkpoint, force=True
        )

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "sweep": self.sweep.checkpoint() if self.sweep and self.level == 1 else None,
            "frontier": self.frontier,
            "next_frontier": self.next_frontier,
            "visited": sorted(self.visited),
            "stats": self.stats,
        }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _node_key(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


async def run_discovery(context: JobContext, options: DiscoveryOptions) -> dict[str, Any]:
    """The discovery executor's body: one attempt of one job."""
    try:
        return await Crawl(context, options).run()
    except aiohttp.ClientError as exc:
        raise ScanFailed(f"HTTP client failure: {exc}") from exc

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
import ssl
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from dns.asyncresolver import Resolver

from ronin import metrics
from ronin.config import Peer
from ronin.discovery import dns_sd, leads
from ronin.discovery.descriptor import DESCRIPTOR_PATH, NodeDescriptor, base_url
from ronin.discovery.hosts import ProbeUrl, UnsafeUrl, parse_probe_url
from ronin.discovery.http_probe import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Failed,
    Fetched,
    descriptor_url,
    fetch_descriptor,
    new_session,
)
from ronin.discovery.job import DiscoveryJob
from ronin.discovery.peer_maps import PeerMaps
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.sweep import RateLimit, open_ports
from ronin.discovery.targets import Probe, Sweep
from ronin.errors import ScanFailed
from ronin.store.models import ServiceFilter, Sighting

DEFAULT_CONCURRENCY = 256
DEFAULT_RATE = 1000.0
MAX_PEER_PROBES = 10_000
FLUSH_INTERVAL_S = 0.5
FLUSH_SIZE = 500
REPORT_INTERVAL_S = 0.5
MAX_REPORTED_MISMATCHES = 100
#: The phases of a level in probe order (the second part of a probe's rank): mDNS instances
#: before the target's own probes (its sweep, or the nodes a domain or DID names).
MDNS_PHASE, TARGET_PHASE = 0, 1

#: Where a probe comes in its job's probe order: (level, phase, position), compared as a
#: tuple. Of two nodes claiming one service_id in a job, the earlier-ranked owns it.
Rank = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """How hard a job may push: the defaults are ones a home network survives."""

    policy: ScopePolicy
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = DEFAULT_RATE
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S
    ssl_context: ssl.SSLContext | None = None
    #: Other Ronins whose maps resolve did:kos DIDs this node's map does not know.
    peers: tuple[Peer, ...] = ()
    #: The DNS server of RONIN_DNS; None: the system's resolver.
    dns: Resolver | None = None
    #: The interface addresses mDNS uses (RONIN_MDNS_INTERFACES); empty: every interface.
    mdns_interfaces: tuple[str, ...] = ()


class Crawl:
    """One attempt of one discovery job."""

    def __init__(self, context: DiscoveryJob, options: DiscoveryOptions) -> None:
        self.context = context
        self.options = options
        self.params = context.params
        resume = context.resume or {}
        self.level: int = resume.get("level", 1)
        self.frontier: list[str] = list(resume.get("frontier", []))
        self.next_frontier: list[str] = list(resume.get("next_frontier", []))
        #: The rank of each URL of the frontier not yet probed, fixed when its level began.
        self.ranks: dict[str, Rank] = {
            url: (int(rank[0]), int(rank[1]), int(rank[2]))
            for url, rank in resume.get("ranks", {}).items()
        }
        self.visited: set[str] = set(resume.get("visited", []))
        self.stats: dict[str, int] = {"hosts_probed": 0, "nodes": 0} | resume.get("stats", {})
        #: The DID each node (by ``_node_key``) was reached through: its descriptor must say
        #: it is that node, or it is a mismatch (PROTOCOL.md section 4).
        self.expected: dict[str, str] = dict(resume.get("expected", {}))
        self.mismatches: list[dict[str, str]] = list(resume.get("mismatches", []))
        #: How a level-1 node was found, where not by the job's own kind of target (a domain's
        #: SRV records), and its descriptor path where a TXT record says it is not the usual.
        self.methods: dict[str, str] = dict(resume.get("methods", {}))
        self.paths: dict[str, str] = dict(resume.get("paths", {}))
        self.mdns_done: bool = resume.get("mdns_done", False)
        self.sweep: Sweep | None = None
        self._sweep_checkpoint: dict[str, Any] | None = resume.get("sweep")
        self._pending: list[Sighting] = []
        self._last_flush = time.monotonic()
        self._rate = RateLimit(options.rate)

    async def run(self) -> dict[str, Any]:
        """Run the job to its end; the extra result fields (stats) it reports."""
        supported = [p for p in self.params.protocols if self._supports(p)]
        for protocol in self.params.protocols:
            if protocol not in supported:
                self.context.probe_failed(f"unsupported_protocol:{protocol}")
        if not supported:
            raise ScanFailed(
                f"none of {', '.join(self.params.protocols)} applies to a "
                f"{self.params.target_type} target"
            )
        self._check_target_scope()
        session = new_session(
            self.options.policy,
            concurrency=self.options.concurrency,
            connect_timeout_s=self.options.connect_timeout_s,
            total_timeout_s=self.options.total_timeout_s,
            ssl_context=self.options.ssl_context,
            dns=self.options.dns,
        )
        async with (
            session,
            PeerMaps(self.options.peers, ssl_context=self.options.ssl_context) as peer_maps,
        ):
            self.session = session
            self.peer_maps = peer_maps
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
        return {"stats": self.stats, "mismatches": self.mismatches}

    def _supports(self, protocol: str) -> bool:
        """http-api and mdns apply to every target, dns-sd to domains (PROTOCOL.md 3)."""
        return protocol in ("http-api", "mdns") or (
            protocol == "dns-sd" and self.params.target_type == "domain"
        )

    def _check_target_scope(self) -> None:
        """FORBIDDEN_TARGET before the first packet (PROTOCOL.md section 6)."""
        if self.params.target_type == "network_cidr":
            self.options.policy.check_target(ipaddress.ip_network(self.params.target))

    async def _first_level(self) -> None:
        if "mdns" in self.params.protocols and not self.mdns_done:
            if not self.frontier:
                self.frontier = await self._mdns_urls()
            await self._peer_level(MDNS_PHASE)
            self.mdns_done = True
            self.frontier = []
        if self.params.target_type == "network_cidr":
            if "http-api" in self.params.protocols:
                await self._sweep_network()
            return
        if self.level == 1 and not self.frontier:
            self.frontier = await self._initial_urls()
        await self._peer_level(TARGET_PHASE)

    async def _mdns_urls(self) -> list[str]:
        network = (
            ipaddress.ip_network(self.params.target)
            if self.params.target_type == "network_cidr"
            else None
        )
        found = await leads.from_mdns(
            self.params.mdns_window_s, self.options.mdns_interfaces, self.options.policy, network
        )
        return self._follow(found)

    async def _initial_urls(self) -> list[str]:
        target = self.params.target
        if self.params.target_type == "domain":
            resolver = self.options.dns or dns_sd.new_resolver(None)
            found = await leads.from_domain(
                target, self.params.protocols, resolver, self.options.policy
            )
            return self._follow(found)
        if "http-api" not in self.params.protocols:
            return []  # a DID is resolved over HTTP
        if target.startswith("did:web:"):
            found = await leads.from_did_web(
                self.session,
                target,
                self.options.policy,
                total_timeout_s=self.options.total_timeout_s,
            )
            urls = self._follow(found)
            if found.unresolved is not None:
                raise ScanFailed(f"{target} could not be resolved: {found.unresolved}")
            return urls
        urls = await self._known_endpoints(target)
        if not urls:
            raise ScanFailed(f"neither this node's map nor its peers' know {target}")
        for url in urls:
            self.expected[_node_key(url)] = target
        return urls

    def _follow(self, found: leads.Leads) -> list[str]:
        """Count what could not be followed; remember how each lead was found; its URLs."""
        for reason in found.failures:
            self._failed(reason)
        urls = []
        for lead in found.found:
            key = _node_key(lead.url)
            if key in self.methods or key in self.visited:
                continue  # one node, found twice
            self.methods[key] = lead.method
            if lead.path != DESCRIPTOR_PATH:
                self.paths[key] = lead.path
            if lead.expected_node_id is not None:
                self.expected[key] = lead.expected_node_id
            urls.append(lead.url)
        return urls

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
                url = base_url(probe.address, probe.port)
                if _node_key(url) not in self.visited:  # an mDNS instance already probed
                    rank = (1, TARGET_PHASE, probe.position)  # the seeded walk's order
                    await self._probe(url, discovery_method="http_probe", rank=rank)
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

    async def _peer_level(self, phase: int = MDNS_PHASE) -> None:
        if self.level > 1:
            method = "peer_referral"
        else:
            method = "did_resolution" if self.params.target_type == "did" else "http_probe"
        slots = asyncio.Semaphore(self.options.concurrency)
        self._rank_frontier(phase)

        async def one(url: str) -> None:
            async with slots:
                await self._rate.wait()
                await self._probe(url, discovery_method=method, rank=self.ranks[url])
                self.frontier.remove(url)
                del self.ranks[url]
                await self._report()

        await asyncio.gather(*(one(url) for url in list(self.frontier)))

    def _rank_frontier(self, phase: int) -> None:
        """Put the level's frontier in its probe order, sorted, so that the order (and the
        rank each probe's sightings carry) does not depend on which peer answered first; a
        resumed level keeps the ranks its checkpoint saved."""
        if all(url in self.ranks for url in self.frontier):
            return
        self.frontier = sorted(set(self.frontier))
        self.ranks = {url: (self.level, phase, i) for i, url in enumerate(self.frontier)}

    async def _probe(self, url: str, *, discovery_method: str, rank: Rank) -> None:
        """Fetch one node's descriptor and record its services; a failure is counted."""
        self.stats["hosts_probed"] += 1
        key = _node_key(url)
        self.visited.add(key)
        discovery_method = self.methods.get(key, discovery_method)
        with metrics.PROBE_SECONDS.time():
            result = await fetch_descriptor(
                self.session,
                descriptor_url(url, self.paths.get(key, DESCRIPTOR_PATH)),
                self.options.policy,
                total_timeout_s=self.options.total_timeout_s,
            )
        if isinstance(result, Failed):
            self._failed(result.reason)
            return
        expected = self.expected.get(_node_key(url))
        if expected is not None and result.descriptor.node_id != expected:
            self._failed("node_id_mismatch")
            if len(self.mismatches) < MAX_REPORTED_MISMATCHES:
                self.mismatches.append(
                    {"did": expected, "node_id": result.descriptor.node_id, "url": result.url}
                )
            return
        metrics.probe_succeeded()
        self.stats["nodes"] += 1
        self._add_sightings(result, discovery_method, rank)
        for _, reason in result.descriptor.skipped:
            self.context.probe_failed(f"skipped:{reason}")
        if self.level < self.params.depth:
            await self._queue_peers(result.descriptor)
        await self._flush_if_due()

    def _failed(self, reason: str) -> None:
        self.context.probe_failed(reason)
        metrics.probe_failed(reason)

    def _add_sightings(self, fetched: Fetched, discovery_method: str, rank: Rank) -> None:
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
                    job_id=str(self.context.job_id),
                    rank=rank,
                )
            )

    async def _queue_peers(self, node: NodeDescriptor) -> None:
        for peer in node.peers:
            urls = await self._known_endpoints(peer) if peer.startswith("did:") else [peer]
            for url in urls:
                try:
                    target = parse_probe_url(url)
                except UnsafeUrl as exc:
                    self.context.probe_failed(f"peer_{exc.reason}")
                    continue
                key = target.origin
                if peer.startswith("did:"):
                    self.expected.setdefault(key, peer)
                if key in self.visited or self._swept(target):
                    continue
                if target.address is not None and not self.options.policy.allows(target.address):
                    self.context.probe_failed("peer_out_of_scope")
                    self.visited.add(key)
                    continue
                if len(self.visited) >= MAX_PEER_PROBES:
                    self.context.probe_failed("peer_limit")
                    continue
                self.visited.add(key)
                self.next_frontier.append(key)

    async def _known_endpoints(self, did: str) -> list[str]:
        """A did:kos node's endpoints, from this node's map and its peers' (PROTOCOL.md
        section 4); every one is re-probed, so a stale or lying map costs a probe."""
        if not did.startswith("did:kos:"):
            self._failed("unresolvable_did")
            return []
        page = await self.context.services.find(ServiceFilter(node_id=did), limit=20)
        endpoints = [s.endpoint for s in page.items if _is_http(s.endpoint)]
        from_peers, failures = await self.peer_maps.endpoints(did)
        endpoints += from_peers
        for reason in failures:
            self._failed(reason)
        bases = {descriptor_url(endpoint) for endpoint in endpoints}
        return sorted(url.removesuffix("/.well-known/kos-node") for url in bases)

    def _swept(self, target: ProbeUrl) -> bool:
        """True when level 1's sweep already covered this address and port."""
        return (
            self.params.target_type == "network_cidr"
            and target.scheme == "http"
            and target.address is not None
            and target.address in ipaddress.ip_network(self.params.target)
            and target.port in self.params.ports
        )

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
            "ranks": self.ranks,
            "visited": sorted(self.visited),
            "stats": self.stats,
            "expected": self.expected,
            "mismatches": self.mismatches,
            "methods": self.methods,
            "paths": self.paths,
            "mdns_done": self.mdns_done,
        }


def _node_key(url: str) -> str:
    """One spelling per node (``scheme://host:port``); a URL Ronin will not connect to keys
    as itself, and its probe fails with the reason."""
    try:
        return parse_probe_url(url).origin
    except UnsafeUrl:
        return url


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


async def run_discovery(context: DiscoveryJob, options: DiscoveryOptions) -> dict[str, Any]:
    """The discovery executor's body: one attempt of one job."""
    try:
        return await Crawl(context, options).run()
    except aiohttp.ClientError as exc:
        raise ScanFailed(f"HTTP client failure: {exc}") from exc

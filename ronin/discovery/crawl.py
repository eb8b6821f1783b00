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
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from ronin import metrics
from ronin.config import Peer
from ronin.discovery import leads
from ronin.discovery.crawl_state import CrawlReport, CrawlState, Rank
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
from ronin.discovery.params import DEFAULT_CONCURRENCY, DEFAULT_RATE
from ronin.discovery.peer_maps import PeerMaps
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.sightings import observe
from ronin.discovery.sweep import RateLimit, open_ports
from ronin.discovery.sweep_stage import OpenPorts, SweepStage, new_sweep
from ronin.discovery.targets import Network, Probe, Sweep
from ronin.errors import ScanFailed
from ronin.store.models import ServiceFilter, Sighting

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver

MAX_PEER_PROBES = 10_000
FLUSH_INTERVAL_S = 0.5
FLUSH_SIZE = 500
MAX_REPORTED_MISMATCHES = 100
#: The phases of a level in probe order (the second part of a probe's rank): mDNS instances
#: before the target's own probes (its sweep, or the nodes a domain or DID names).
MDNS_PHASE, TARGET_PHASE = 0, 1

#: How a crawl fetches one descriptor, given its URL: a fetched descriptor or why not.
FetchDescriptor = Callable[[str], Awaitable[Fetched | Failed]]


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
    #: How descriptors are fetched; None: ``fetch_descriptor`` over the job's scoped session.
    fetch: FetchDescriptor | None = None
    #: Where a network sweep's open ports come from: connects, unless a test fakes them.
    open_ports: OpenPorts = open_ports


class Crawl:
    """One attempt of one discovery job: its levels, in order, over a ``CrawlState``."""

    def __init__(self, context: DiscoveryJob, options: DiscoveryOptions) -> None:
        self.context = context
        self.options = options
        self.params = context.params
        self.state = CrawlState.from_checkpoint(context.resume)
        self.sweep: Sweep | None = None
        self._pending: list[Sighting] = []
        #: Peer links (referrer node_id, peer node_id) to write after the pending sightings.
        self._pending_links: list[tuple[str, str]] = []
        #: The node_ids fetched in this job so far (the values of ``state.node_ids``).
        self._fetched = set(self.state.node_ids.values())
        #: Nodes behind swept open ports whose fetch is under way: the sweep's checkpoint
        #: repeats them, so a checkpoint must not count them visited (or probed) yet.
        self._sweeping: set[str] = set()
        self._last_flush = time.monotonic()
        #: One batch written at a time: a report's flush waits for a probe's batch in flight,
        #: so a checkpoint is never saved before the sightings of the nodes it counts done.
        self._flushing = asyncio.Lock()
        self._rate = RateLimit(options.rate)

    async def run(self) -> CrawlReport:
        """Run the job to its end; what it reports for the job's result (stats, mismatches)."""
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
            self._fetch = self.options.fetch or self._fetch_over(session)
            await self._levels()
        await self._flush()
        await self._report(force=True, message="done")
        return self.state.report()

    async def _levels(self) -> None:
        """Level 1, then each level of peers, up to the job's depth or until none are new."""
        state = self.state
        while state.level <= self.params.depth:
            if state.level == 1:
                await self._first_level()
            else:
                await self._peer_level()
            if not state.next_frontier:
                break
            state.level += 1
            state.frontier, state.next_frontier = state.next_frontier, []
            await self._report(force=True)

    def _fetch_over(self, session: aiohttp.ClientSession) -> FetchDescriptor:
        """The real probe: ``fetch_descriptor`` within the scope policy and time bound."""

        async def fetch(url: str) -> Fetched | Failed:
            return await fetch_descriptor(
                session, url, self.options.policy, total_timeout_s=self.options.total_timeout_s
            )

        return fetch

    def _supports(self, protocol: str) -> bool:
        """http-api and mdns apply to every target, dns-sd to domains (PROTOCOL.md 3)."""
        return protocol in ("http-api", "mdns") or (
            protocol == "dns-sd" and self.params.target_type == "domain"
        )

    def _check_target_scope(self) -> None:
        """FORBIDDEN_TARGET before the first packet (PROTOCOL.md section 6)."""
        if self.params.network is not None:
            self.options.policy.check_target(self.params.network)

    async def _first_level(self) -> None:
        state = self.state
        if "mdns" in self.params.protocols and not state.mdns_done:
            if not state.frontier:
                state.frontier = await self._mdns_urls()
            await self._peer_level(MDNS_PHASE)
            state.mdns_done = True
            state.frontier = []
        if self.params.network is not None:
            if "http-api" in self.params.protocols:
                await self._sweep_network(self.params.network)
            return
        if state.level == 1 and not state.frontier:
            state.frontier = await self._initial_urls()
        await self._peer_level(TARGET_PHASE)

    async def _mdns_urls(self) -> list[str]:
        found = await leads.from_mdns(
            self.params.mdns_window_s,
            self.options.mdns_interfaces,
            self.options.policy,
            self.params.network,
        )
        return self._follow(found)

    async def _initial_urls(self) -> list[str]:
        target = self.params.target
        if self.params.target_type == "domain":
            from ronin.discovery import dns_sd  # dnspython: only for a domain target

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
        urls, _ = await self._known_endpoints(target)
        if not urls:
            raise ScanFailed(f"neither this node's map nor its peers' know {target}")
        for url in urls:
            self.state.expected[_node_key(url)] = target
        return urls

    def _follow(self, found: leads.Leads) -> list[str]:
        """Count what could not be followed; remember how each lead was found; its URLs."""
        state = self.state
        for reason in found.failures:
            self._failed(reason)
        urls = []
        for lead in found.found:
            key = _node_key(lead.url)
            if key in state.methods or key in state.visited:
                continue  # one node, found twice
            state.methods[key] = lead.method
            if lead.path != DESCRIPTOR_PATH:
                state.paths[key] = lead.path
            if lead.expected_node_id is not None:
                state.expected[key] = lead.expected_node_id
            urls.append(lead.url)
        return urls

    async def _sweep_network(self, network: Network) -> None:
        self.sweep = new_sweep(network, self.params.ports, self.context.job_id, self.state.sweep)
        stage = SweepStage(
            self.sweep,
            self.options.open_ports,
            concurrency=self.options.concurrency,
            rate=self._rate,
            connect_timeout_s=self.options.connect_timeout_s,
        )
        await stage.run(on_open=self._probe_swept, on_closed=self._closed, report=self._report)
        self.state.sweep = None

    def _closed(self, reason: str, count: int) -> None:
        """Count swept ports that did not open, by reason."""
        stats = self.state.stats
        stats["hosts_probed"] += count
        stats[f"closed_{reason}"] = stats.get(f"closed_{reason}", 0) + count

    async def _probe_swept(self, probe: Probe) -> None:
        """Fetch the descriptor behind an open port the sweep found."""
        url = base_url(probe.address, probe.port)
        key = _node_key(url)
        if key in self.state.visited:  # an mDNS instance already probed
            return
        rank = (1, TARGET_PHASE, probe.position)  # the seeded walk's order
        self._sweeping.add(key)
        await self._probe(url, discovery_method="http_probe", rank=rank)
        # Not on failure: a probe that raised stays out of every later checkpoint's visited
        # (its position stays in the sweep's in-flight list), so a resumed attempt repeats it.
        self._sweeping.discard(key)

    async def _peer_level(self, phase: int = MDNS_PHASE) -> None:
        state = self.state
        if state.level > 1:
            method = "peer_referral"
        else:
            method = "did_resolution" if self.params.target_type == "did" else "http_probe"
        slots = asyncio.Semaphore(self.options.concurrency)
        self._rank_frontier(phase)

        async def one(url: str) -> None:
            async with slots:
                await self._rate.wait()
                await self._probe(url, discovery_method=method, rank=state.ranks[url])
                state.frontier.remove(url)
                del state.ranks[url]
                await self._report()

        await asyncio.gather(*(one(url) for url in list(state.frontier)))

    def _rank_frontier(self, phase: int) -> None:
        """Put the level's frontier in its probe order, sorted, so that the order (and the
        rank each probe's sightings carry) does not depend on which peer answered first; a
        resumed level keeps the ranks its checkpoint saved."""
        state = self.state
        if all(url in state.ranks for url in state.frontier):
            return
        state.frontier = sorted(set(state.frontier))
        state.ranks = {url: (state.level, phase, i) for i, url in enumerate(state.frontier)}

    async def _probe(self, url: str, *, discovery_method: str, rank: Rank) -> None:
        """Fetch one node's descriptor and record its services; a failure is counted."""
        state = self.state
        state.stats["hosts_probed"] += 1
        key = _node_key(url)
        state.visited.add(key)
        discovery_method = state.methods.get(key, discovery_method)
        with metrics.PROBE_SECONDS.time():
            result = await self._fetch(descriptor_url(url, state.paths.get(key, DESCRIPTOR_PATH)))
        if isinstance(result, Failed):
            self._failed(result.reason)
            state.referrers.pop(key, None)
            return
        if self._mismatched(key, result):
            state.referrers.pop(key, None)
            return
        metrics.probe_succeeded()
        state.stats["nodes"] += 1
        observed = observe(
            result,
            discovery_method=discovery_method,
            job_id=self.context.job_id,
            rank=rank,
            seen_at=datetime.now(UTC),
        )
        self._pending.extend(observed.sightings)
        for reason in observed.skipped:
            self.context.probe_failed(reason)
        node_id = result.descriptor.node_id
        state.node_ids[key] = node_id
        self._fetched.add(node_id)
        for referrer in state.referrers.pop(key, []) + state.referrers.pop(node_id, []):
            self._link(referrer, node_id)
        if state.level < self.params.depth:
            await self._queue_peers(result.descriptor)
        else:
            self._link_known_peers(result.descriptor)
        await self._flush_if_due()

    def _mismatched(self, key: str, fetched: Fetched) -> bool:
        """True (and counted) when the node was reached through a DID it does not claim."""
        expected = self.state.expected.get(key)
        if expected is None or fetched.descriptor.node_id == expected:
            return False
        self._failed("node_id_mismatch")
        if len(self.state.mismatches) < MAX_REPORTED_MISMATCHES:
            self.state.mismatches.append(
                {"did": expected, "node_id": fetched.descriptor.node_id, "url": fetched.url}
            )
        return True

    def _failed(self, reason: str) -> None:
        self.context.probe_failed(reason)
        metrics.probe_failed(reason)

    async def _queue_peers(self, node: NodeDescriptor) -> None:
        """Queue the peers a node names, and link it to each one known: at once for a DID
        in this node's map, else once the peer's address is fetched in this job."""
        for peer in node.peers:
            if peer.startswith("did:"):
                urls, in_map = await self._known_endpoints(peer)
                if in_map:
                    self._link(node.node_id, peer)
                else:  # linked if a node of that DID is fetched in this job
                    self._refer(node.node_id, peer)
                referrer = None
            else:
                urls, referrer = [peer], node.node_id
            for url in urls:
                self._queue_peer(peer, url, referrer)

    def _queue_peer(self, peer: str, url: str, referrer: str | None = None) -> None:
        """Queue one URL of a peer for the next level, unless it is refused or known; the
        link from ``referrer`` is made once the node at that address is known (now, if an
        earlier probe of this job fetched it: no address is probed twice)."""
        state = self.state
        try:
            target = parse_probe_url(url)
        except UnsafeUrl as exc:
            self.context.probe_failed(f"peer_{exc.reason}")
            return
        key = target.origin
        if peer.startswith("did:"):
            state.expected.setdefault(key, peer)
        if key in state.visited or self._swept(target):
            self._refer(referrer, key)
            return
        if target.address is not None and not self.options.policy.allows(target.address):
            self.context.probe_failed("peer_out_of_scope")
            state.visited.add(key)
            return
        if len(state.visited) >= MAX_PEER_PROBES:
            self.context.probe_failed("peer_limit")
            return
        state.visited.add(key)
        state.next_frontier.append(key)
        self._refer(referrer, key)

    def _refer(self, referrer: str | None, key: str) -> None:
        """``referrer`` named the node at ``key`` (an address's key, or a DID): link them,
        now or once it is fetched."""
        if referrer is None:
            return
        if key.startswith("did:"):
            found = key if key in self._fetched else None
        else:
            found = self.state.node_ids.get(key)
        if found is not None:
            self._link(referrer, found)
            return
        waiting = self.state.referrers.setdefault(key, [])
        if referrer not in waiting:
            waiting.append(referrer)

    def _link_known_peers(self, node: NodeDescriptor) -> None:
        """At the last level, peers are not followed, but linked if this job fetches them
        anyway (already, or later in this level): no I/O for them."""
        state = self.state
        for peer in node.peers:
            if peer.startswith("did:"):
                self._refer(node.node_id, peer)
                continue
            try:
                target = parse_probe_url(peer)
            except UnsafeUrl:
                continue
            if target.origin in state.visited or self._swept(target):
                self._refer(node.node_id, target.origin)

    def _link(self, source: str, target: str) -> None:
        if source != target:
            self._pending_links.append((source, target))

    async def _known_endpoints(self, did: str) -> tuple[list[str], bool]:
        """A did:kos node's endpoints, from this node's map and its peers' (PROTOCOL.md
        section 4), and whether this node's map holds it; every endpoint is re-probed, so a
        stale or lying map costs a probe."""
        if not did.startswith("did:kos:"):
            self._failed("unresolvable_did")
            return [], False
        page = await self.context.services.find(ServiceFilter(node_id=did), limit=20)
        endpoints = [s.endpoint for s in page.items if _is_http(s.endpoint)]
        from_peers, failures = await self.peer_maps.endpoints(did)
        endpoints += from_peers
        for reason in failures:
            self._failed(reason)
        bases = {descriptor_url(endpoint) for endpoint in endpoints}
        return sorted(url.removesuffix("/.well-known/kos-node") for url in bases), bool(page.items)

    def _swept(self, target: ProbeUrl) -> bool:
        """True when level 1's sweep already covered this address and port."""
        network = self.params.network
        return (
            network is not None
            and target.scheme == "http"
            and target.address is not None
            and target.address in network
            and target.port in self.params.ports
        )

    async def _flush_if_due(self) -> None:
        if len(self._pending) >= FLUSH_SIZE or (
            (self._pending or self._pending_links)
            and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S
        ):
            await self._flush()

    async def _flush(self) -> None:
        """Write buffered sightings to the map, linked to this job (after any batch in flight),
        then the peer links found with them (best effort: the services come first)."""
        async with self._flushing:
            batch, self._pending = self._pending, []
            links, self._pending_links = self._pending_links, []
            self._last_flush = time.monotonic()
            try:
                if batch:
                    await self.context.record(batch)
            except BaseException:
                # Back in the buffer: the next report's flush writes them before its
                # checkpoint (which counts their nodes done) is saved, or fails with them.
                self._pending[:0] = batch
                self._pending_links[:0] = links
                raise
            if links:
                await self.context.record_links(links)

    async def _report(self, *, force: bool = False, message: str | None = None) -> None:
        """Progress, with the checkpoint a re-claimed attempt resumes from."""
        depth, level, stats = self.params.depth, self.state.level, self.state.stats
        within = self.sweep.fraction_done if self.sweep and level == 1 else 0.0
        percent = int(100 * ((level - 1) + within) / depth) if message != "done" else 100
        text = message or (
            f"level {level}/{depth}: {stats['hosts_probed']} probed, {stats['nodes']} nodes"
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
        """The state, with where level 1's sweep stands now (none past level 1)."""
        state = self.state
        if not (self.sweep and state.level == 1):
            return replace(state, sweep=None).to_checkpoint()
        stats = state.stats | {"hosts_probed": state.stats["hosts_probed"] - len(self._sweeping)}
        return replace(
            state,
            sweep=self.sweep.checkpoint(),
            visited=state.visited - self._sweeping,
            stats=stats,
        ).to_checkpoint()


def _node_key(url: str) -> str:
    """One spelling per node (``scheme://host:port``); a URL Ronin will not connect to keys
    as itself, and its probe fails with the reason."""
    try:
        return parse_probe_url(url).origin
    except UnsafeUrl:
        return url


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


async def run_discovery(context: DiscoveryJob, options: DiscoveryOptions) -> CrawlReport:
    """The discovery executor's body: one attempt of one job."""
    try:
        return await Crawl(context, options).run()
    except aiohttp.ClientError as exc:
        raise ScanFailed(f"HTTP client failure: {exc}") from exc

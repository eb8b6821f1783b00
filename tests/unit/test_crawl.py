"""The crawl on its own: depth, cycles, the no-address-twice rule, resume and its checkpoint,
against a fake job and fake probes (no database, no sockets)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ronin.beacon import ServiceSpec, demo_descriptor, encode_descriptor, make_descriptor
from ronin.discovery.crawl import Crawl, DiscoveryOptions
from ronin.discovery.crawl_state import CrawlReport, CrawlState
from ronin.discovery.descriptor import NodeDescriptor, ServiceEntry, parse_descriptor
from ronin.discovery.hosts import parse_probe_url
from ronin.discovery.http_probe import Failed, Fetched
from ronin.discovery.params import JobParams, parse_params
from ronin.discovery.policy import ScopePolicy
from ronin.discovery.sightings import observe
from ronin.discovery.sweep import RateLimit
from ronin.discovery.sweep_stage import new_sweep
from ronin.discovery.targets import Probe, Sweep
from ronin.store.models import ServiceFilter, Sighting

PORT = 30437
NOW = datetime(2026, 12, 1, tzinfo=UTC)
JOB_ID = uuid.UUID("00000000-0000-4000-8000-000000000011")


def origin(host: str) -> str:
    return f"http://{host}:{PORT}"


@dataclass
class FakeJob:
    """What the crawl uses of a job, in memory: every checkpoint saved, as JSON would keep it."""

    params: JobParams
    resume: Any = None
    known: Mapping[str, Sequence[str]] = field(default_factory=dict)
    job_id: uuid.UUID = JOB_ID
    failures: Counter[str] = field(default_factory=Counter)
    recorded: list[Sighting] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    #: (checkpoint, service ids recorded when it was saved) for each progress report.
    saved: list[tuple[dict[str, Any], set[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services = SimpleNamespace(find=self._find)
        #: A resumed job's earlier attempt wrote services this fake never saw.
        self.fresh = self.resume is None

    async def _find(self, where: ServiceFilter, *, limit: int) -> Any:
        endpoints = self.known.get(where.node_id or "", ())
        return SimpleNamespace(items=[SimpleNamespace(endpoint=e) for e in endpoints][:limit])

    async def progress(
        self, percent: int, message: str, *, resume: Any = None, force: bool = False
    ) -> None:
        if resume is not None:
            self.resume = json.loads(json.dumps(resume))
            self.saved.append((self.resume, self.service_ids()))

    def progress_due(self) -> bool:
        return True

    async def record(self, sightings: Sequence[Sighting]) -> None:
        self.recorded.extend(sightings)

    async def record_links(self, links: Sequence[tuple[str, str]]) -> int:
        # Written after the services they join: both ends' sightings are recorded already.
        written = {s.node_id for s in self.recorded}
        assert not self.fresh or all(s in written and t in written for s, t in links), links
        self.links.extend(links)
        return len(links)

    def probe_failed(self, reason: str) -> None:
        self.failures[reason] += 1

    def service_ids(self) -> set[str]:
        return {s.service_id for s in self.recorded}


class FakeNet:
    """Nodes by origin; every descriptor fetch counted by the node it reached."""

    def __init__(self, descriptors: Mapping[str, dict[str, Any]]) -> None:
        self.descriptors = descriptors
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []

    async def fetch(self, url: str) -> Fetched | Failed:
        key = parse_probe_url(url).origin
        self.calls[key] += 1
        self.order.append(key)
        if key not in self.descriptors:
            return Failed(url, "refused", "nothing listens")
        body = encode_descriptor(self.descriptors[key])
        return Fetched(url, parse_descriptor(body), 1.5)

    def open_ports(self) -> Callable[..., AsyncIterator[Probe]]:
        """A sweep source: the ports of known nodes are open, every other one refused."""

        async def source(
            sweep: Sweep,
            *,
            concurrency: int,
            rate: RateLimit,
            connect_timeout_s: float,
            on_closed: Callable[[str, int], None],
        ) -> AsyncIterator[Probe]:
            for probe in sweep:
                if origin(probe.address) in self.descriptors:
                    yield probe
                else:
                    on_closed("refused", 1)
                    sweep.finished(probe)

        return source


def node(host: str, peers: Sequence[str] = ()) -> dict[str, Any]:
    return demo_descriptor(host, PORT, peers=list(peers))


def graph(edges: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Descriptors of hosts, each naming its peers by URL."""
    return {origin(host): node(host, [origin(p) for p in peers]) for host, peers in edges.items()}


def params(target: str, depth: int, kind: str = "network_cidr") -> JobParams:
    return parse_params(
        {
            "target": {"type": kind, "value": target},
            "depth": depth,
            "protocols": ["http-api"],
            "ports": [PORT],
        }
    )


async def crawl(job: FakeJob, net: FakeNet) -> CrawlReport:
    options = DiscoveryOptions(
        policy=ScopePolicy.default(),
        concurrency=1,
        rate=None,
        fetch=net.fetch,
        open_ports=net.open_ports(),
    )
    return await Crawl(cast(Any, job), options).run()


def services_of(net: FakeNet, *hosts: str) -> set[str]:
    return {s["service_id"] for h in hosts for s in net.descriptors[origin(h)]["services"]}


#: 1 -> 2 -> 3 -> 4: each level reaches one more node.
CHAIN: dict[str, list[str]] = {f"127.0.0.{i}": [f"127.0.0.{i + 1}"] for i in range(1, 4)}
CHAIN["127.0.0.4"] = []


@pytest.mark.parametrize(
    ("depth", "reached"),
    [
        (1, ["127.0.0.1"]),
        (2, ["127.0.0.1", "127.0.0.2"]),
        (3, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
    ],
)
async def test_depth_bounds_how_far_peers_are_followed(depth: int, reached: list[str]) -> None:
    net = FakeNet(graph(CHAIN))
    job = FakeJob(params("127.0.0.1/32", depth))
    result = await crawl(job, net)
    assert set(net.calls) == {origin(h) for h in reached}
    assert job.service_ids() == services_of(net, *reached)
    assert result.stats["nodes"] == len(reached)
    assert job.saved[-1][0]["level"] == depth


async def test_a_network_target_reaches_the_crawl_parsed() -> None:
    """The crawl sweeps the network its params carry, parsed once at submission: the target's
    text (one address here) is never parsed again."""
    net = FakeNet(graph({"127.0.0.1": [], "127.0.0.2": []}))
    wider = replace(params("127.0.0.1/32", 1), network=ipaddress.ip_network("127.0.0.0/30"))
    job = FakeJob(wider)
    await crawl(job, net)
    assert set(net.calls) == {origin("127.0.0.1"), origin("127.0.0.2")}


async def test_a_cycle_ends_and_no_address_is_fetched_twice() -> None:
    edges = {
        "127.0.0.1": ["127.0.0.2", "127.0.0.3"],
        "127.0.0.2": ["127.0.0.3", "127.0.0.1"],
        "127.0.0.3": ["127.0.0.1", "127.0.0.2", "127.0.0.4"],
        "127.0.0.4": ["127.0.0.1"],
    }
    net = FakeNet(graph(edges))
    job = FakeJob(params("127.0.0.1/32", 8))
    result = await crawl(job, net)
    assert net.calls == Counter({origin(h): 1 for h in edges})
    assert job.service_ids() == services_of(net, *edges)
    assert result.stats["nodes"] == 4
    assert job.saved[-1][0]["level"] == 3  # 4 is found at level 3; nothing new after it


def node_id_of(net: FakeNet, host: str) -> str:
    return str(net.descriptors[origin(host)]["node_id"])


def links_of(net: FakeNet, edges: Mapping[str, Sequence[str]]) -> set[tuple[str, str]]:
    return {
        (node_id_of(net, source), node_id_of(net, target))
        for source, targets in edges.items()
        for target in targets
    }


async def test_every_peer_named_is_linked_once_even_to_nodes_already_fetched() -> None:
    """A cycle: peers already probed (or queued) in the job are linked all the same."""
    edges = {
        "127.0.0.1": ["127.0.0.2", "127.0.0.3"],
        "127.0.0.2": ["127.0.0.3", "127.0.0.1"],
        "127.0.0.3": ["127.0.0.1", "127.0.0.2", "127.0.0.4"],
        "127.0.0.4": ["127.0.0.1"],
    }
    net = FakeNet(graph(edges))
    job = FakeJob(params("127.0.0.1/32", 8))
    await crawl(job, net)
    assert sorted(job.links) == sorted(links_of(net, edges))


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_links_stop_at_the_depth_but_the_last_level_links_to_known_nodes(
    depth: int,
) -> None:
    edges = {"127.0.0.1": ["127.0.0.2"], "127.0.0.2": ["127.0.0.3", "127.0.0.1"]}
    edges["127.0.0.3"] = ["127.0.0.2"]
    net = FakeNet(graph(edges))
    job = FakeJob(params("127.0.0.1/32", depth))
    await crawl(job, net)
    expected = {
        1: set(),
        2: links_of(net, {"127.0.0.1": ["127.0.0.2"], "127.0.0.2": ["127.0.0.1"]}),
        3: links_of(net, edges),
    }[depth]
    assert set(job.links) == expected


async def test_at_the_last_level_peers_fetched_later_in_it_are_linked_too() -> None:
    """A sweep at depth 1 follows no peer, but links the swept nodes that name each other,
    whichever of them was fetched first."""
    edges = {"127.0.0.1": ["127.0.0.2"], "127.0.0.2": ["127.0.0.1", "127.0.0.3"]}
    edges |= {"127.0.0.3": ["127.0.0.1", "127.0.0.2", "http://127.0.0.9:30437"]}
    descriptors = graph(edges)
    descriptors[origin("127.0.0.1")]["peers"].append(descriptors[origin("127.0.0.3")]["node_id"])
    net = FakeNet(descriptors)
    job = FakeJob(params("127.0.0.0/29", 1))
    await crawl(job, net)
    assert sorted(job.links) == sorted(
        links_of(net, {k: [p for p in v if "://" not in p] for k, v in edges.items()})
        | {(node_id_of(net, "127.0.0.1"), node_id_of(net, "127.0.0.3"))}
    )


async def test_a_swept_peer_and_a_did_peer_in_the_map_are_linked() -> None:
    edges = {"127.0.0.1": ["127.0.0.2"], "127.0.0.2": ["127.0.0.9"], "127.0.0.9": []}
    descriptors = graph(edges)
    descriptors[origin("127.0.0.9")]["peers"] = ["did:kos:griot:known", "did:kos:griot:nowhere"]
    net = FakeNet(descriptors)
    job = FakeJob(params("127.0.0.0/29", 3), known={"did:kos:griot:known": ["http://127.0.0.5"]})
    job.recorded.append(
        Sighting("known-svc", "did:kos:griot:known", "Griot", "http://127.0.0.5", [], NOW)
    )
    await crawl(job, net)
    assert set(job.links) == links_of(net, edges) | {
        (node_id_of(net, "127.0.0.9"), "did:kos:griot:known")
    }


async def test_a_peer_spelled_differently_is_the_same_node() -> None:
    spellings = [
        "HTTP://127.0.0.2:30437",
        "http://127.0.0.2:30437/",
        "http://127.0.0.2:30437/elsewhere",
        "http://127.0.0.3",
        "http://127.0.0.3:80/",
    ]
    descriptors = {
        origin("127.0.0.1"): node("127.0.0.1", spellings),
        origin("127.0.0.2"): node("127.0.0.2", ["http://127.0.0.1:30437/x"]),
        "http://127.0.0.3:80": demo_descriptor("127.0.0.3", 80),
    }
    net = FakeNet(descriptors)
    job = FakeJob(params("127.0.0.1/32", 3))
    await crawl(job, net)
    assert net.calls == Counter({key: 1 for key in descriptors})


async def test_hostile_and_out_of_scope_peers_are_refused_before_any_fetch() -> None:
    peers = ["http://127.1:30437", "http://user@127.0.0.2:30437", "http://8.8.8.8:30437"]
    net = FakeNet({origin("127.0.0.1"): node("127.0.0.1", peers)})
    job = FakeJob(params("127.0.0.1/32", 2))
    await crawl(job, net)
    assert set(net.calls) == {origin("127.0.0.1")}
    assert job.failures["peer_non_canonical_address"] == 1
    assert job.failures["peer_userinfo"] == 1
    assert job.failures["peer_out_of_scope"] == 1


async def test_a_swept_address_is_not_fetched_again_as_a_peer() -> None:
    edges = {"127.0.0.1": ["127.0.0.2"], "127.0.0.2": ["127.0.0.1", "127.0.0.9"]}
    edges["127.0.0.9"] = []
    net = FakeNet(graph(edges))
    job = FakeJob(params("127.0.0.0/29", 3))  # sweeps .1 to .6
    result = await crawl(job, net)
    assert net.calls == Counter({origin(h): 1 for h in edges})
    assert result.stats["closed_refused"] == 4
    assert result.stats["hosts_probed"] == 4 + 3
    ranks = {s.node_id: s.rank for s in job.recorded}
    assert ranks[net.descriptors[origin("127.0.0.9")]["node_id"]] == (2, 0, 0)
    swept = [ranks[net.descriptors[origin(h)]["node_id"]] for h in ("127.0.0.1", "127.0.0.2")]
    assert all(rank is not None and rank[:2] == (1, 1) for rank in swept)


async def test_a_did_target_must_be_the_node_its_endpoints_reach() -> None:
    net = FakeNet(graph({"127.0.0.1": [], "127.0.0.2": []}))
    real = net.descriptors[origin("127.0.0.1")]["node_id"]
    endpoints = [f"{origin('127.0.0.1')}/klf", f"{origin('127.0.0.2')}/klf"]
    job = FakeJob(params(real, 1, kind="did"), known={real: endpoints})
    result = await crawl(job, net)
    assert set(net.calls) == {origin("127.0.0.1"), origin("127.0.0.2")}
    assert job.failures["node_id_mismatch"] == 1
    assert result.mismatches[0].did == real
    assert job.service_ids() == services_of(net, "127.0.0.1")
    assert {s.metadata["discovery_method"] for s in job.recorded} == {"did_resolution"}


WIDE = {"127.0.0.1": [f"127.0.0.{i}" for i in range(2, 7)]}
WIDE |= {f"127.0.0.{i}": ["127.0.0.9"] for i in range(2, 7)}
WIDE["127.0.0.9"] = []


async def test_a_resumed_job_continues_mid_level_without_refetching_finished_nodes() -> None:
    net = FakeNet(graph(WIDE))
    first = FakeJob(params("127.0.0.1/32", 3))
    whole = await crawl(first, net)
    mid = [
        (checkpoint, found)
        for checkpoint, found in first.saved
        if checkpoint["level"] == 2 and len(checkpoint["frontier"]) == 2
    ]
    checkpoint, found_before = mid[0]
    done = set(net.order[: net.order.index(origin("127.0.0.4")) + 1])

    again = FakeNet(graph(WIDE))
    second = FakeJob(params("127.0.0.1/32", 3), resume=checkpoint)
    resumed = await crawl(second, again)
    assert set(again.calls) == {origin("127.0.0.5"), origin("127.0.0.6"), origin("127.0.0.9")}
    assert not set(again.calls) & done
    assert max(again.calls.values()) == 1
    assert found_before | second.service_ids() == first.service_ids()
    assert resumed.stats == whole.stats
    assert second.saved[-1][0] == first.saved[-1][0]


async def test_a_resumed_sweep_repeats_only_what_was_in_flight() -> None:
    net = FakeNet(graph({"127.0.0.1": [], "127.0.0.2": []}))
    other = CrawlState(sweep={"seed": -1, "next": 99})  # another job's sweep: ignored
    job = FakeJob(params("127.0.0.0/29", 1), resume=other.to_checkpoint())
    await crawl(job, net)
    assert net.calls == Counter({origin("127.0.0.1"): 1, origin("127.0.0.2"): 1})

    walk = new_sweep(ipaddress.ip_network("127.0.0.0/29"), (PORT,), JOB_ID, None)
    position = next(p.position for p in walk if p.address == "127.0.0.2")
    finished = job.saved[-1][0]
    finished["sweep"]["in_flight"] = [position]  # open, its fetch waiting for a slot
    finished["visited"].remove(origin("127.0.0.2"))
    again = FakeNet(net.descriptors)
    rerun = FakeJob(params("127.0.0.0/29", 1), resume=finished)
    result = await crawl(rerun, again)
    assert again.calls == Counter({origin("127.0.0.2"): 1})
    assert result.stats["nodes"] == 2 + 1


def test_the_checkpoint_round_trip_keeps_every_field() -> None:
    state = CrawlState(
        level=2,
        frontier=["http://127.0.0.3:30437"],
        next_frontier=["http://127.0.0.4:30437"],
        ranks={"http://127.0.0.3:30437": (2, 0, 1)},
        visited={"http://127.0.0.1:30437", "http://127.0.0.3:30437"},
        stats={"hosts_probed": 5, "nodes": 2, "closed_refused": 3},
        expected={"http://127.0.0.3:30437": "did:kos:griot:a"},
        mismatches=[{"did": "did:kos:a", "node_id": "did:kos:b", "url": "http://x:1/"}],
        methods={"http://127.0.0.1:30437": "dns_sd"},
        paths={"http://127.0.0.1:30437": "/kos.json"},
        mdns_done=True,
        node_ids={"http://127.0.0.1:30437": "did:kos:griot:a"},
        referrers={"http://127.0.0.4:30437": ["did:kos:griot:a"]},
        sweep={"seed": 7, "next": 3, "in_flight": [1], "in_flight_blocks": [], "done": 2},
    )
    assert CrawlState.from_checkpoint(state.to_checkpoint()) == state
    stored = json.loads(json.dumps(state.to_checkpoint()))
    assert CrawlState.from_checkpoint(stored) == state
    assert set(stored) == {
        "level",
        "sweep",
        "frontier",
        "next_frontier",
        "ranks",
        "visited",
        "stats",
        "expected",
        "mismatches",
        "methods",
        "paths",
        "mdns_done",
        "node_ids",
        "referrers",
    }


def test_an_older_checkpoint_missing_keys_resumes_with_their_starting_values() -> None:
    state = CrawlState.from_checkpoint({"level": 2, "frontier": ["http://a:1"], "stats": {}})
    assert state == CrawlState(level=2, frontier=["http://a:1"])
    assert state.stats == {"hosts_probed": 0, "nodes": 0}
    assert CrawlState.from_checkpoint(None) == CrawlState()


def test_a_checkpoint_is_a_copy_the_crawl_does_not_change_afterwards() -> None:
    state = CrawlState(frontier=["http://a:1"])
    saved = state.to_checkpoint()
    state.frontier.append("http://b:1")
    state.stats["nodes"] += 1
    assert saved["frontier"] == ["http://a:1"]
    assert saved["stats"]["nodes"] == 0


SEEN_AT = datetime(2026, 1, 1, tzinfo=UTC)


def fetched(hieros: dict[str, Any] | None, skipped: tuple[tuple[str, str], ...] = ()) -> Fetched:
    services = (
        ServiceEntry("did:kos:service:a", "http://127.0.0.1:1/klf", ("x",), ("klf/1.0",)),
        ServiceEntry("did:kos:service:b", "http://127.0.0.1:1/b", ("y", "z"), ("http/1.1",)),
    )
    descriptor = NodeDescriptor(
        "1.0", "did:kos:griot:a", "Griot", services, (), hieros, skipped=skipped
    )
    return Fetched("http://127.0.0.1:1/.well-known/kos-node", descriptor, 12.5)


def test_each_service_of_a_descriptor_is_one_sighting_ranked_in_the_job() -> None:
    hieros = {"verified": True, "codex_hash": "0" * 64}
    observed = observe(
        fetched(hieros),
        discovery_method="peer_referral",
        job_id=JOB_ID,
        rank=(2, 1, 3),
        seen_at=SEEN_AT,
    )
    assert [s.service_id for s in observed.sightings] == ["did:kos:service:a", "did:kos:service:b"]
    first = observed.sightings[0]
    assert (first.node_id, first.node_class, first.endpoint) == (
        "did:kos:griot:a",
        "Griot",
        "http://127.0.0.1:1/klf",
    )
    assert first.capabilities == ("x",)
    assert (first.job_id, first.rank, first.seen_at) == (str(JOB_ID), (2, 1, 3), SEEN_AT)
    assert dict(first.metadata) == {
        "discovery_method": "peer_referral",
        "response_time_ms": 12.5,
        "job_id": str(JOB_ID),
        "protocols": ["klf/1.0"],
        "descriptor_url": "http://127.0.0.1:1/.well-known/kos-node",
        "hieros_compliance": hieros,
    }
    assert observed.skipped == ()


def test_a_descriptor_without_hieros_or_with_left_out_entries() -> None:
    skipped = (("services[2]", "bad_endpoint"), ("peers[0]", "bad_peer"))
    observed = observe(
        fetched(None, skipped),
        discovery_method="http_probe",
        job_id=JOB_ID,
        rank=(1, 1, 0),
        seen_at=SEEN_AT,
    )
    assert all("hieros_compliance" not in s.metadata for s in observed.sightings)
    assert observed.skipped == ("skipped:bad_endpoint", "skipped:bad_peer")


async def test_left_out_entries_are_counted_in_the_job() -> None:
    document = make_descriptor(
        "did:kos:griot:s",
        "Griot",
        [ServiceSpec("did:kos:service:s", "not a url", ("x",))],
        peers=["not a peer"],
    )
    net = FakeNet({origin("127.0.0.1"): document})
    job = FakeJob(params("127.0.0.1/32", 2))
    await crawl(job, net)
    assert sum(n for r, n in job.failures.items() if r.startswith("skipped:")) == 2
    assert job.recorded == []


async def test_a_checkpoint_taken_while_a_swept_node_is_fetched_repeats_that_fetch() -> None:
    """A node whose fetch is under way is neither visited nor probed in the checkpoint: a
    resumed attempt fetches it again instead of skipping it as already probed."""
    descriptors = graph({"127.0.0.1": [], "127.0.0.2": []})
    net = FakeNet(descriptors)
    fetching, release = asyncio.Event(), asyncio.Event()
    plain_fetch = net.fetch

    async def slow_fetch(url: str) -> Fetched | Failed:
        if parse_probe_url(url).origin == origin("127.0.0.2"):
            fetching.set()
            await release.wait()
        return await plain_fetch(url)

    net.fetch = slow_fetch  # type: ignore[method-assign]
    job = FakeJob(params("127.0.0.0/29", 1))
    options = DiscoveryOptions(
        policy=ScopePolicy.default(),
        concurrency=4,
        rate=None,
        fetch=net.fetch,
        open_ports=net.open_ports(),
    )
    crawler = Crawl(cast(Any, job), options)
    running = asyncio.create_task(crawler.run())
    await fetching.wait()
    checkpoint = json.loads(json.dumps(crawler._checkpoint()))
    release.set()
    whole = await running

    assert origin("127.0.0.2") not in checkpoint["visited"]
    again = FakeNet(descriptors)
    rerun = FakeJob(params("127.0.0.0/29", 1), resume=checkpoint)
    result = await crawl(rerun, again)
    assert again.calls[origin("127.0.0.2")] == 1
    assert services_of(net, "127.0.0.2") <= rerun.service_ids()
    assert result.stats == whole.stats  # each address counted once, both nodes found


async def test_a_checkpoint_is_saved_only_after_a_batch_in_flight_is_written() -> None:
    """A probe's flush may be writing a batch when a report takes its checkpoint: that
    checkpoint counts the batch's nodes as done, so it must not be saved before the batch is
    (a worker killed in between would lose those nodes' services for good)."""
    writing, release = asyncio.Event(), asyncio.Event()

    class SlowJob(FakeJob):
        async def record(self, sightings: Sequence[Sighting]) -> None:
            writing.set()
            await release.wait()
            await super().record(sightings)

    descriptors = graph({"127.0.0.1": []})
    job = SlowJob(params("127.0.0.0/29", 1))
    options = DiscoveryOptions(
        policy=ScopePolicy.default(), concurrency=4, rate=None, fetch=FakeNet(descriptors).fetch
    )
    crawler = Crawl(cast(Any, job), options)
    found = await FakeNet(descriptors).fetch(origin("127.0.0.1") + "/.well-known/kos-node")
    assert isinstance(found, Fetched)
    crawler._pending.extend(
        observe(
            found,
            discovery_method="http_probe",
            job_id=JOB_ID,
            rank=(1, 0, 0),
            seen_at=datetime.now(UTC),
        ).sightings
    )
    crawler.state.visited.add(origin("127.0.0.1"))
    flushing = asyncio.create_task(crawler._flush())  # a probe's flush, now writing
    await writing.wait()
    reporting = asyncio.create_task(crawler._report(force=True))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert job.saved == []  # not before the batch it counts is written
    release.set()
    await asyncio.gather(flushing, reporting)
    [(checkpoint, recorded)] = job.saved
    assert origin("127.0.0.1") in checkpoint["visited"]
    assert services_of(FakeNet(descriptors), "127.0.0.1") <= recorded


async def test_a_batch_that_failed_to_be_written_is_written_before_the_next_checkpoint() -> None:
    """A probe's flush that fails (the database away for a moment) keeps its batch: the next
    report writes it before saving a checkpoint that counts its nodes done, or saves nothing."""
    attempts: list[int] = []

    class FlakyJob(FakeJob):
        async def record(self, sightings: Sequence[Sighting]) -> None:
            attempts.append(len(sightings))
            if len(attempts) == 1:
                raise RuntimeError("the database went away")
            await super().record(sightings)

    descriptors = graph({"127.0.0.1": []})
    job = FlakyJob(params("127.0.0.0/29", 1))
    options = DiscoveryOptions(policy=ScopePolicy.default(), concurrency=1, rate=None)
    crawler = Crawl(cast(Any, job), options)
    found = await FakeNet(descriptors).fetch(origin("127.0.0.1") + "/.well-known/kos-node")
    assert isinstance(found, Fetched)
    sightings = observe(
        found, discovery_method="http_probe", job_id=JOB_ID, rank=(1, 0, 0), seen_at=NOW
    ).sightings
    crawler._pending.extend(sightings)
    crawler.state.visited.add(origin("127.0.0.1"))

    with pytest.raises(RuntimeError):
        await crawler._flush()
    assert job.saved == []
    assert job.recorded == []
    await crawler._report(force=True)

    assert attempts == [len(sightings), len(sightings)]
    [(checkpoint, recorded)] = job.saved
    assert origin("127.0.0.1") in checkpoint["visited"]
    assert services_of(FakeNet(descriptors), "127.0.0.1") <= recorded


async def test_a_swept_node_whose_probe_raised_is_repeated_by_the_resumed_attempt() -> None:
    """A probe that raises stops the sweep, and no checkpoint taken meanwhile counts that
    node done: the attempt that resumes from it fetches the node again."""
    descriptors = graph({"127.0.0.1": [], "127.0.0.2": [], "127.0.0.3": []})
    net = FakeNet(descriptors)
    plain_fetch, plain_source = net.fetch, net.open_ports()

    async def failing_fetch(url: str) -> Fetched | Failed:
        if parse_probe_url(url).origin == origin("127.0.0.2"):
            raise RuntimeError("a bug in a probe")
        return await plain_fetch(url)

    async def source(sweep: Sweep, **kwargs: Any) -> AsyncIterator[Probe]:
        async for probe in plain_source(sweep, **kwargs):
            yield probe
            if probe.address == "127.0.0.2":
                for _ in range(5):
                    await asyncio.sleep(0)  # its fetch fails meanwhile
                await crawler._report(force=True)  # a report between the failure and the stop

    job = FakeJob(params("127.0.0.0/29", 1))
    options = DiscoveryOptions(
        policy=ScopePolicy.default(),
        concurrency=4,
        rate=None,
        fetch=failing_fetch,
        open_ports=source,
    )
    crawler = Crawl(cast(Any, job), options)
    with pytest.raises(RuntimeError):
        await crawler.run()
    checkpoint = job.saved[-1][0]
    assert origin("127.0.0.2") not in checkpoint["visited"]

    again = FakeNet(descriptors)
    rerun = FakeJob(params("127.0.0.0/29", 1), resume=checkpoint)
    await crawl(rerun, again)
    assert again.calls[origin("127.0.0.2")] == 1
    assert services_of(net, "127.0.0.2") <= rerun.service_ids()

"""Where a crawl stands: everything its checkpoint holds, and the one round trip to and
from that checkpoint, so a re-claimed job resumes instead of starting over.

The checkpoint's JSON keys are a stored format: a job checkpointed by an older Ronin
resumes, so a key missing from it takes its starting value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ronin.store.job_models import Mismatch

#: Where a probe comes in its job's probe order: (level, phase, position), compared as a
#: tuple. Of two nodes claiming one service_id in a job, the earlier-ranked owns it.
Rank = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class CrawlReport:
    """What a crawl reports for its job's result beyond the job's own tallies."""

    stats: Mapping[str, int]
    mismatches: tuple[Mismatch, ...]


def _starting_stats() -> dict[str, int]:
    return {"hosts_probed": 0, "nodes": 0}


@dataclass(slots=True)
class CrawlState:
    """One crawl's progress, as its checkpoint saves it."""

    level: int = 1
    #: The URLs of this level not yet probed, and the next level's, found so far.
    frontier: list[str] = field(default_factory=list)
    next_frontier: list[str] = field(default_factory=list)
    #: The rank of each URL of the frontier not yet probed, fixed when its level began.
    ranks: dict[str, Rank] = field(default_factory=dict)
    #: Every node (by its ``scheme://host:port`` key) probed or queued: none twice in a job.
    visited: set[str] = field(default_factory=set)
    stats: dict[str, int] = field(default_factory=_starting_stats)
    #: The DID each node (by its key) was reached through: its descriptor must say it is
    #: that node, or it is a mismatch (PROTOCOL.md section 4).
    expected: dict[str, str] = field(default_factory=dict)
    mismatches: list[dict[str, str]] = field(default_factory=list)
    #: How a level-1 node was found, where not by the job's own kind of target (a domain's
    #: SRV records), and its descriptor path where a TXT record says it is not the usual.
    methods: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    mdns_done: bool = False
    #: Peer links: the node_id each node (by its key) turned out to be in this job, and the
    #: node_ids that named a node (by its key) not fetched yet, linked once it is.
    node_ids: dict[str, str] = field(default_factory=dict)
    referrers: dict[str, list[str]] = field(default_factory=dict)
    #: Where level 1's network sweep stands (``Sweep.checkpoint()``); None: not under way.
    sweep: dict[str, Any] | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        """The JSON object saved with a progress report (copies: the crawl goes on)."""
        return {
            "level": self.level,
            "sweep": self.sweep,
            "frontier": list(self.frontier),
            "next_frontier": list(self.next_frontier),
            "ranks": dict(self.ranks),
            "visited": sorted(self.visited),
            "stats": dict(self.stats),
            "expected": dict(self.expected),
            "mismatches": list(self.mismatches),
            "methods": dict(self.methods),
            "paths": dict(self.paths),
            "mdns_done": self.mdns_done,
            "node_ids": dict(self.node_ids),
            "referrers": {key: list(names) for key, names in self.referrers.items()},
        }

    def report(self) -> CrawlReport:
        """The stats and mismatches, for the job's result (copies: the state may go on)."""
        return CrawlReport(dict(self.stats), tuple(Mismatch.from_json(m) for m in self.mismatches))

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any] | None) -> CrawlState:
        """The state a checkpoint saved (None: a fresh start); missing keys start afresh."""
        saved = checkpoint or {}
        return cls(
            level=saved.get("level", 1),
            frontier=list(saved.get("frontier", [])),
            next_frontier=list(saved.get("next_frontier", [])),
            ranks={
                url: (int(rank[0]), int(rank[1]), int(rank[2]))
                for url, rank in saved.get("ranks", {}).items()
            },
            visited=set(saved.get("visited", [])),
            stats=_starting_stats() | saved.get("stats", {}),
            expected=dict(saved.get("expected", {})),
            mismatches=list(saved.get("mismatches", [])),
            methods=dict(saved.get("methods", {})),
            paths=dict(saved.get("paths", {})),
            mdns_done=saved.get("mdns_done", False),
            node_ids=dict(saved.get("node_ids", {})),
            referrers={key: list(names) for key, names in saved.get("referrers", {}).items()},
            sweep=saved.get("sweep"),
        )

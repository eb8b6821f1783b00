"""Who owns a ``service_id`` that several sightings claim (PROTOCOL.md section 7).

A row the map held before a job stays with its node until it goes stale: another node's claim
is a conflict. Between the claims of one job, probe order decides: the earliest-ranked node
owns the ``service_id``, whichever probe's answer was written first, and a row that job wrote
for a later-ranked node is taken over by an earlier-ranked one. Every node whose claim lost is
one conflict; none is dropped. The rule is applied here, in Python, to rows the batch has
locked, so what it decides is what is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from ronin.store.models import Conflict, Sighting

#: The discovery_metadata key holding the job that wrote a row for its current node, and
#: that probe's rank in the job: what a later, earlier-ranked claim of that job is compared to.
CLAIM_KEY = "claim"

Outcome = Literal["inserted", "refreshed", "taken_over", "outdated"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The job that wrote a row for its node, and where that node's probe came in it."""

    job_id: str
    rank: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "rank": list(self.rank)}

    @staticmethod
    def of(sighting: Sighting) -> Claim | None:
        if sighting.job_id is None or sighting.rank is None:
            return None
        return Claim(sighting.job_id, sighting.rank)

    @staticmethod
    def from_json(value: Any) -> Claim | None:
        """The stored claim; None when absent or not one this module wrote."""
        if not isinstance(value, dict):
            return None
        job_id, rank = value.get("job_id"), value.get("rank")
        if not isinstance(job_id, str) or not isinstance(rank, list) or not rank:
            return None
        if not all(type(part) is int and part >= 0 for part in rank):
            return None
        return Claim(job_id, tuple(rank))


@dataclass(frozen=True, slots=True)
class Held:
    """A row of the map as a batch found (and locked) it."""

    node_id: str
    last_seen: datetime
    stale: bool
    claim: Claim | None


@dataclass(slots=True)
class Settled:
    """What the claims of one ``service_id`` in one batch come to."""

    service_id: str
    #: The sighting to write, with ``claim`` to store beside it; None: the row stays as it is.
    write: Sighting | None = None
    claim: Claim | None = None
    #: True: the row is new (an insert); False: an existing row is updated.
    new: bool = False
    outcome: Outcome | None = None
    conflicts: list[Conflict] = field(default_factory=list)


def settle(service_id: str, held: Held | None, sightings: list[Sighting]) -> Settled:
    """Apply the claims of one ``service_id``, earliest-ranked first, to the row ``held``.

    One node's several sightings are one claim: its latest sighting, at its earliest rank.
    """
    claims = sorted(_per_node(sightings), key=_order)
    result = Settled(service_id, new=held is None)
    owner, owner_seen, claim, stale = (
        (held.node_id, held.last_seen, held.claim, held.stale) if held else (None, None, None, True)
    )
    losers: list[str] = []
    owner_claimed = False
    for _, sighting in claims:
        if owner == sighting.node_id:
            assert owner_seen is not None
            owner_claimed = True
            if sighting.seen_at >= owner_seen:
                result.write, owner_seen = sighting, sighting.seen_at
                claim = _lowered(claim, sighting)
        elif owner is None or stale or _precedes(sighting, claim):
            if owner is not None and not stale:
                losers.append(owner)
            owner, owner_seen, claim, stale = (
                sighting.node_id,
                sighting.seen_at,
                Claim.of(sighting),
                False,
            )
            result.write, owner_claimed = sighting, True
        else:
            losers.append(sighting.node_id)
    assert owner is not None
    assert owner_seen is not None
    result.claim = claim
    if owner_claimed:
        result.outcome = _outcome(held, owner, result.write is not None)
    result.conflicts = [
        Conflict(service_id, loser, owner, owner_seen) for loser in dict.fromkeys(losers)
    ]
    return result


def _per_node(sightings: list[Sighting]) -> list[tuple[int, Sighting]]:
    """One claim per node: its latest sighting, at its earliest rank and batch position."""
    merged: dict[str, tuple[int, Sighting]] = {}
    for index, sighting in enumerate(sightings):
        held = merged.get(sighting.node_id)
        if held is None:
            merged[sighting.node_id] = (index, sighting)
            continue
        first, kept = held
        latest = sighting if sighting.seen_at >= kept.seen_at else kept
        ranks = [r for r in (kept.rank, sighting.rank) if r is not None]
        merged[sighting.node_id] = (first, replace(latest, rank=min(ranks) if ranks else None))
    return list(merged.values())


def _order(claim: tuple[int, Sighting]) -> tuple[bool, tuple[int, ...], int]:
    """Ranked claims first, earliest rank first; then in the order the batch gave them."""
    index, sighting = claim
    return (sighting.rank is None, sighting.rank or (), index)


def _precedes(sighting: Sighting, claim: Claim | None) -> bool:
    """Whether ``sighting`` comes before the stored claim in the same job's probe order."""
    return (
        claim is not None
        and sighting.rank is not None
        and sighting.job_id == claim.job_id
        and sighting.rank < claim.rank
    )


def _lowered(claim: Claim | None, sighting: Sighting) -> Claim | None:
    """The owner seen again: its claim keeps its job, at the earlier of the two ranks."""
    if claim is None or sighting.rank is None or sighting.job_id != claim.job_id:
        return claim
    return Claim(claim.job_id, min(claim.rank, sighting.rank))


def _outcome(held: Held | None, owner: str, written: bool) -> Outcome:
    if held is None:
        return "inserted"
    if held.node_id == owner:
        return "refreshed" if written else "outdated"
    return "refreshed" if held.stale else "taken_over"

"""What the map holds and how it is asked: plain, immutable values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from ronin.errors import InvalidValue
from ronin.kos import CANONICAL_CLASSES
from ronin.store.liveness_rules import STATES, VISIBLE_STATES, State
from ronin.store.storable import check_json, check_text

# Column widths of the seed schema, and the protocol's capability rule that keeps
# service_capabilities rows within a B-tree entry.
MAX_ID_CHARS = 255
MAX_NODE_CLASS_CHARS = 100
MAX_CAPABILITY_CHARS = 128
MAX_CAPABILITIES = 128
MAX_RANK_PARTS = 8
_CANONICAL_BY_LOWER = {name.lower(): name for name in CANONICAL_CLASSES}


def canonical_class(node_class: str) -> str:
    """One of the canonical classes (PROTOCOL.md section 1), in whatever case, spelled as the
    protocol spells it; any other class as given. The map stores and is searched by this
    spelling, so "griot" finds Griot through the class indexes."""
    if node_class.isascii():
        return _CANONICAL_BY_LOWER.get(node_class.lower(), node_class)
    return node_class


@dataclass(frozen=True, slots=True)
class Sighting:
    """One observation of a service by a discovery job: what the upsert writes.

    Built only from values PostgreSQL can store, so one bad value cannot fail a batch.
    """

    service_id: str
    node_id: str
    node_class: str
    endpoint: str
    capabilities: tuple[str, ...]
    seen_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The job whose probe saw it, and where that probe came in the job's probe order
    #: (compared as tuples, smaller = earlier): of two nodes claiming one ``service_id`` in
    #: one job, the earlier-ranked owns it. None: a sighting outside any job's order.
    job_id: str | None = None
    rank: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_sized("service_id", self.service_id, MAX_ID_CHARS)
        _check_sized("node_id", self.node_id, MAX_ID_CHARS)
        _check_sized("node_class", self.node_class, MAX_NODE_CLASS_CHARS)
        object.__setattr__(self, "node_class", canonical_class(self.node_class))
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise InvalidValue("endpoint must be a non-empty string", field="endpoint")
        check_text(self.endpoint, "endpoint")
        if len(self.capabilities) > MAX_CAPABILITIES:
            raise InvalidValue(f"at most {MAX_CAPABILITIES} capabilities", field="capabilities")
        for index, capability in enumerate(self.capabilities):
            _check_sized(f"capabilities[{index}]", capability, MAX_CAPABILITY_CHARS)
        if self.seen_at.tzinfo is None:
            raise InvalidValue("seen_at must be timezone-aware", field="seen_at")
        check_json(dict(self.metadata), "discovery_metadata")
        if self.job_id is not None:
            _check_sized("job_id", self.job_id, MAX_ID_CHARS)
        if self.rank is not None:
            _check_rank(self.rank)


def _check_rank(rank: tuple[int, ...]) -> None:
    """A rank is a short tuple of non-negative integers (it is stored as a JSON array)."""
    if not (
        isinstance(rank, tuple)
        and 1 <= len(rank) <= MAX_RANK_PARTS
        and all(type(part) is int and part >= 0 for part in rank)
    ):
        raise InvalidValue(
            f"rank must be a tuple of 1 to {MAX_RANK_PARTS} non-negative integers", field="rank"
        )


def _check_sized(name: str, value: str, max_chars: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars:
        raise InvalidValue(f"{name} must be a string of 1 to {max_chars} characters", field=name)
    check_text(value, name)


@dataclass(frozen=True, slots=True)
class Service:
    """One row of the map."""

    service_id: str
    node_id: str
    node_class: str
    endpoint: str
    capabilities: list[str]
    discovery_metadata: dict[str, Any]
    last_seen: datetime
    #: Where the service is in the liveness state machine (PROTOCOL.md section 8); one the
    #: liveness table has no row for (written before it existed) reads as alive.
    state: State = "alive"
    state_since: datetime | None = None
    #: The last check of its node, whatever it said; None before the first.
    last_checked: datetime | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A sighting that claimed a ``service_id`` another node holds (PROTOCOL.md section 7)."""

    service_id: str
    claimed_by: str
    owner: str
    owner_last_seen: datetime


@dataclass(slots=True)
class UpsertResult:
    """What a batch of sightings did to the map: each ``service_id`` is in one of
    ``inserted``, ``refreshed``, ``taken_over`` or ``outdated`` (or only in ``conflicts``),
    and every node whose claim of it lost is one conflict."""

    inserted: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    outdated: list[str] = field(default_factory=list)
    #: Rows an earlier-ranked claim of the same job took from the node a later-ranked claim
    #: had written them for (that node is among ``conflicts``): the job already counted them.
    taken_over: list[str] = field(default_factory=list)

    def merge(self, other: UpsertResult) -> None:
        """Add another batch's outcome to this one."""
        self.inserted += other.inserted
        self.refreshed += other.refreshed
        self.conflicts += other.conflicts
        self.outdated += other.outdated
        self.taken_over += other.taken_over


@dataclass(frozen=True, slots=True)
class ServiceFilter:
    """What a map query asks for; every part is optional and they combine with AND.

    ``all_capabilities``: the service holds every one (``@>``);
    ``any_capabilities``: it holds at least one (``?|``);
    ``states``: its state is one of these; none given means every state but ``gone``.
    """

    all_capabilities: tuple[str, ...] = ()
    any_capabilities: tuple[str, ...] = ()
    node_class: str | None = None
    node_id: str | None = None
    seen_since: datetime | None = None
    states: tuple[State, ...] = ()

    def __post_init__(self) -> None:
        for name in ("all_capabilities", "any_capabilities"):
            for capability in getattr(self, name):
                _check_sized(name, capability, MAX_CAPABILITY_CHARS)
        if self.node_class is not None:
            _check_sized("node_class", self.node_class, MAX_NODE_CLASS_CHARS)
            object.__setattr__(self, "node_class", canonical_class(self.node_class))
        if self.node_id is not None:
            _check_sized("node_id", self.node_id, MAX_ID_CHARS)
        if self.seen_since is not None and self.seen_since.tzinfo is None:
            raise InvalidValue("seen_since must be timezone-aware", field="seen_since")
        object.__setattr__(self, "states", checked_states(self.states))

    @property
    def wanted_states(self) -> list[str]:
        """The states asked for, or those map queries return by default."""
        return list(self.states or VISIBLE_STATES)


def checked_states(states: Sequence[str]) -> tuple[State, ...]:
    """``states`` without repeats, each one of the four (else INVALID_VALUE, field state)."""
    for state in states:
        if state not in STATES:
            raise InvalidValue(f"state must be one of {', '.join(STATES)}", field="state")
    return tuple(cast(State, state) for state in dict.fromkeys(states))


@dataclass(frozen=True, slots=True)
class Page:
    """One keyset page of services and the cursor of the next, if any."""

    items: list[Service]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Count:
    """A count that stops at a bound: exact below it, "at least" at it."""

    value: int
    exact: bool


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """The map's holdings for one node class."""

    node_class: str
    services: int
    nodes: int
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class MapSummary:
    """What the map holds, by node class, and its services by state (every state present)."""

    classes: list[ClassSummary]
    states: dict[State, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))

    @property
    def services(self) -> int:
        return sum(c.services for c in self.classes)

    @property
    def nodes(self) -> int:
        return sum(c.nodes for c in self.classes)


@dataclass(frozen=True, slots=True)
class Node:
    """A node of the map: its services, grouped."""

    node_id: str
    node_class: str
    last_seen: datetime
    services: list[Service]


@dataclass(frozen=True, slots=True)
class NodePage:
    """One keyset page of nodes and the cursor of the next, if any."""

    items: list[Node]
    next_cursor: str | None

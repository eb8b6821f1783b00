"""Where the dashboard draws each node: placed once, when a node first appears, never moved.

Pure rules, no SQL (``ronin.store.links`` reads what they need and stores what they return):
each node class has its own sector around the origin, the classes of ``CANONICAL_CLASSES``
in that order (any other class shares the last, catch-all sector), and a sector's slots are
a golden-angle spiral: slot k at radius ``sqrt(k)`` (so slots stay evenly spread however
many there are) and at the golden fraction of k across the sector's angle. A new node that a
placed node referred goes beside that referrer instead, at an offset its node_id fixes.
The same nodes placed in the same order land in the same places.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ronin.kos import CANONICAL_CLASSES

#: One sector per canonical class, and one for every other class.
SECTORS = len(CANONICAL_CLASSES) + 1
SECTOR_ANGLE = 2 * math.pi / SECTORS
#: The golden ratio's fractional part: consecutive slots never line up.
GOLDEN = (math.sqrt(5) - 1) / 2
#: Slot spacing (about one unit between neighbours) and the empty disc at the origin.
SPACING = math.sqrt(2 / SECTOR_ANGLE)
INNER_RADIUS = 4.0
#: How far from its referrer a referred node lands (between the two, by its node_id).
NEAR_MIN, NEAR_MAX = 0.6, 1.4
#: A sector's slots stay clear of its edges by this fraction of its angle on each side.
EDGE = 0.04


@dataclass(frozen=True, slots=True)
class Position:
    """A placed node: where, and which slot of its class's sector it took (None: beside its
    referrer)."""

    x: float
    y: float
    slot: int | None = None


@dataclass(frozen=True, slots=True)
class NewNode:
    """A node to place: its class and the nodes that referred it (in any order)."""

    node_id: str
    node_class: str
    referrers: tuple[str, ...] = ()


def sector(node_class: str) -> int:
    """The sector of a class: its place among the canonical classes, else the last."""
    try:
        return CANONICAL_CLASSES.index(node_class)
    except ValueError:
        return SECTORS - 1


def slot_position(node_class: str, slot: int) -> tuple[float, float]:
    """Slot ``slot`` of the class's sector."""
    if slot < 0:
        raise ValueError("slot must not be negative")
    start = sector(node_class) * SECTOR_ANGLE
    fraction = EDGE + (1 - 2 * EDGE) * ((slot * GOLDEN) % 1.0)
    angle = start + fraction * SECTOR_ANGLE
    radius = math.sqrt(INNER_RADIUS**2 + SPACING**2 * slot)
    return _round(radius * math.cos(angle)), _round(radius * math.sin(angle))


def near(referrer: Position, node_id: str) -> tuple[float, float]:
    """Beside ``referrer``, at an angle and distance ``node_id`` alone decides."""
    digest = hashlib.blake2b(node_id.encode(), digest_size=8).digest()
    turn = int.from_bytes(digest[:4], "big") / 2**32
    reach = int.from_bytes(digest[4:], "big") / 2**32
    distance = NEAR_MIN + (NEAR_MAX - NEAR_MIN) * reach
    angle = 2 * math.pi * turn
    return (
        _round(referrer.x + distance * math.cos(angle)),
        _round(referrer.y + distance * math.sin(angle)),
    )


def place(
    new: Sequence[NewNode],
    placed: Mapping[str, Position],
    taken_slots: Mapping[str, Iterable[int]],
) -> dict[str, Position]:
    """Positions for ``new`` nodes (in the order given), given the nodes already ``placed``
    and the slots each class has ``taken``.

    A node with a placed referrer (the first by node_id, of those placed before it or
    already) goes beside it; else it takes its class's lowest free slot. A node placed
    draws the new nodes it referred next, beside it, so a chain of new nodes stays together
    (its first node takes the slot, whatever order the chain came in).
    """
    positions: dict[str, Position] = {}
    taken = {cls: set(slots) for cls, slots in taken_slots.items()}
    next_free: dict[str, int] = {}
    wanted = {node.node_id: node for node in new if node.node_id not in placed}
    referred: dict[str, list[str]] = {}
    for node in wanted.values():
        for referrer in sorted(set(node.referrers)):
            referred.setdefault(referrer, []).append(node.node_id)

    def known(node_id: str) -> Position | None:
        return positions.get(node_id) or placed.get(node_id)

    def free_slot(node_class: str) -> int:
        used = taken.setdefault(node_class, set())
        slot = next_free.get(node_class, 0)
        while slot in used:
            slot += 1
        used.add(slot)
        next_free[node_class] = slot + 1
        return slot

    def put(node: NewNode) -> None:
        referrer = next(
            (known(r) for r in sorted(set(node.referrers)) if known(r) is not None), None
        )
        if referrer is not None:
            x, y = near(referrer, node.node_id)
            positions[node.node_id] = Position(x, y)
        else:
            slot = free_slot(node.node_class)
            x, y = slot_position(node.node_class, slot)
            positions[node.node_id] = Position(x, y, slot)

    def spread(node: NewNode) -> None:
        """Place ``node``, then depth first what it referred, each beside its referrer."""
        put(node)
        stack = [node.node_id]
        while stack:
            source = stack.pop()
            for target in reversed(referred.get(source, [])):
                if target not in positions:
                    put(wanted[target])
                    stack.append(target)

    # First the nodes no other new node referred (or that a placed node did), so a new node
    # waits for its new referrer; then what is left (new nodes referring to each other in a
    # ring), in the order given.
    def root(node: NewNode) -> bool:
        return any(r in placed for r in node.referrers) or not any(
            r in wanted and r != node.node_id for r in node.referrers
        )

    for node in [n for n in wanted.values() if root(n)] + list(wanted.values()):
        if node.node_id not in positions:
            spread(node)
    return positions


def _round(value: float) -> float:
    """Positions to a thousandth: short in JSON, and equal however they were computed."""
    return round(value, 3)

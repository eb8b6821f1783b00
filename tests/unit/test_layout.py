"""The dashboard's placement rules: class sectors, spiral slots, referred nodes beside their
referrer, and the same places for the same nodes in the same order."""

from __future__ import annotations

import itertools
import math

import pytest

from ronin.kos import CANONICAL_CLASSES
from ronin.store.layout import (
    NEAR_MAX,
    NEAR_MIN,
    SECTOR_ANGLE,
    SECTORS,
    NewNode,
    Position,
    near,
    place,
    sector,
    slot_position,
)


def angle_of(x: float, y: float) -> float:
    return math.atan2(y, x) % (2 * math.pi)


@pytest.mark.parametrize("node_class", [*CANONICAL_CLASSES, "Unknown"])
def test_every_slot_of_a_class_is_inside_its_own_sector(node_class: str) -> None:
    index = sector(node_class)
    for slot in range(500):
        x, y = slot_position(node_class, slot)
        assert index * SECTOR_ANGLE <= angle_of(x, y) <= (index + 1) * SECTOR_ANGLE


def test_classes_have_distinct_sectors_and_unknown_ones_share_the_last() -> None:
    assert len({sector(c) for c in CANONICAL_CLASSES}) == len(CANONICAL_CLASSES)
    assert sector("Wanderer") == sector("Nomad") == SECTORS - 1


def test_slots_spread_evenly_and_no_two_coincide() -> None:
    points = [slot_position("Griot", k) for k in range(1000)]
    assert len(set(points)) == len(points)
    radii = [math.hypot(x, y) for x, y in points]
    assert radii == sorted(radii)  # the spiral only grows outwards
    nearest = min(math.dist(a, b) for i, a in enumerate(points[:200]) for b in points[i + 1 : 200])
    assert nearest > 0.2


def test_new_nodes_take_the_lowest_free_slots_of_their_class() -> None:
    new = [NewNode("did:kos:griot:a", "Griot"), NewNode("did:kos:griot:b", "Griot")]
    placed = place(new, {}, {"Griot": [0, 2]})
    assert placed["did:kos:griot:a"] == Position(*slot_position("Griot", 1), slot=1)
    assert placed["did:kos:griot:b"] == Position(*slot_position("Griot", 3), slot=3)


def test_a_referred_node_lands_beside_its_placed_referrer() -> None:
    referrer = Position(10.0, -5.0, slot=4)
    placed = place(
        [NewNode("did:kos:musa:x", "Musa", ("did:kos:griot:r",))],
        {"did:kos:griot:r": referrer},
        {},
    )
    spot = placed["did:kos:musa:x"]
    assert spot.slot is None
    distance = math.dist((spot.x, spot.y), (referrer.x, referrer.y))
    assert NEAR_MIN - 0.01 <= distance <= NEAR_MAX + 0.01
    assert (spot.x, spot.y) == near(referrer, "did:kos:musa:x")


def test_a_chain_of_new_nodes_stays_together_around_the_first_ones_slot() -> None:
    chain = [
        NewNode(f"did:kos:griot:{i:03d}", "Griot", (f"did:kos:griot:{i - 1:03d}",) if i else ())
        for i in range(20)
    ]
    placed = place(list(reversed(chain)), {}, {})
    assert placed[chain[0].node_id].slot == 0
    assert all(placed[n.node_id].slot is None for n in chain[1:])
    for before, after in itertools.pairwise(chain):
        a, b = placed[before.node_id], placed[after.node_id]
        assert math.dist((a.x, a.y), (b.x, b.y)) <= NEAR_MAX + 0.01


def test_the_same_nodes_in_the_same_order_land_in_the_same_places() -> None:
    new = [
        NewNode(f"did:kos:{c.lower()}:{i}", c, (f"did:kos:griot:{i - 1}",) if i % 3 else ())
        for i in range(60)
        for c in ("Griot", "Musa", "Strange")
    ]
    first = place(new, {"did:kos:griot:1": Position(1.0, 2.0)}, {"Musa": [0]})
    again = place(new, {"did:kos:griot:1": Position(1.0, 2.0)}, {"Musa": [0]})
    assert first == again
    assert set(first) == {n.node_id for n in new} - {"did:kos:griot:1"}


def test_nodes_already_placed_are_not_moved() -> None:
    placed = place([NewNode("did:kos:griot:a", "Griot")], {"did:kos:griot:a": Position(1, 1)}, {})
    assert placed == {}


def test_a_negative_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="slot"):
        slot_position("Griot", -1)

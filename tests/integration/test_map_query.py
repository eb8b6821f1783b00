"""Map queries: every filter and combination returns exactly what a brute-force scan would,
page by page, in order; counts stop at their bound; pruning forgets only the stale."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ronin.errors import InvalidCursor, InvalidValue
from ronin.store.models import ServiceFilter, Sighting
from ronin.store.services import ServiceMap

NOW = datetime.now(UTC).replace(microsecond=0)
CLASSES = ("Griot", "Tohunga", "Musa")
VOCABULARY = tuple(f"cap{i}" for i in range(8))


def dataset(size: int = 300) -> list[Sighting]:
    rng = random.Random(7)
    return [
        Sighting(
            service_id=f"did:kos:service:{rng.getrandbits(40):010x}",
            node_id=f"did:kos:node:{i % 23}",
            node_class=CLASSES[i % 23 % len(CLASSES)],
            endpoint=f"http://10.1.0.{i % 250}:30437/",
            # cap0 is common, cap7 rare: a skew like a real map's.
            capabilities=tuple(c for j, c in enumerate(VOCABULARY) if rng.random() < 0.6 / (j + 1)),
            seen_at=NOW - timedelta(minutes=i % 60),
        )
        for i in range(size)
    ]


def matches(where: ServiceFilter) -> Callable[[Sighting], bool]:
    def test(s: Sighting) -> bool:
        return (
            set(where.all_capabilities) <= set(s.capabilities)
            and (
                not where.any_capabilities
                or not set(where.any_capabilities).isdisjoint(s.capabilities)
            )
            and where.node_class in (None, s.node_class)
            and where.node_id in (None, s.node_id)
            and (where.seen_since is None or s.seen_at >= where.seen_since)
        )

    return test


FILTERS = [
    ServiceFilter(),
    ServiceFilter(all_capabilities=("cap0",)),
    ServiceFilter(all_capabilities=("cap7",)),
    ServiceFilter(all_capabilities=("cap0", "cap1")),
    ServiceFilter(all_capabilities=("cap1", "cap0", "cap2")),
    ServiceFilter(any_capabilities=("cap2", "cap5")),
    ServiceFilter(any_capabilities=("cap0", "cap1"), all_capabilities=("cap3",)),
    ServiceFilter(node_class="Musa"),
    ServiceFilter(node_id="did:kos:node:4"),
    ServiceFilter(seen_since=NOW - timedelta(minutes=10)),
    ServiceFilter(all_capabilities=("cap1",), node_class="Griot"),
    ServiceFilter(
        all_capabilities=("cap0",), node_class="Tohunga", seen_since=NOW - timedelta(minutes=30)
    ),
    ServiceFilter(any_capabilities=("cap1", "cap4"), node_id="did:kos:node:5"),
    ServiceFilter(all_capabilities=("no-such-capability",)),
]


@pytest.fixture
async def filled_map(service_map: ServiceMap) -> list[Sighting]:
    rows = dataset()
    await service_map.upsert(rows)
    return rows


@pytest.mark.parametrize("where", FILTERS, ids=repr)
async def test_pages_walk_every_match_once_in_order(
    service_map: ServiceMap, filled_map: list[Sighting], where: ServiceFilter
) -> None:
    expected = sorted(s.service_id for s in filled_map if matches(where)(s))
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await service_map.find(where, limit=17, cursor=cursor)
        assert len(page.items) <= 17
        seen += [service.service_id for service in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    count = await service_map.count(where)
    assert (count.value, count.exact) == (len(expected), True)


async def test_rows_come_back_whole(service_map: ServiceMap, filled_map: list[Sighting]) -> None:
    page = await service_map.find(ServiceFilter(all_capabilities=("cap7",)), limit=1)
    [service] = page.items
    source = next(s for s in filled_map if s.service_id == service.service_id)
    assert service.node_id == source.node_id
    assert service.node_class == source.node_class
    assert service.endpoint == source.endpoint
    assert service.capabilities == list(source.capabilities)
    assert service.last_seen == source.seen_at


async def test_counts_stop_at_their_bound(
    service_map: ServiceMap, filled_map: list[Sighting]
) -> None:
    holders = sum("cap0" in s.capabilities for s in filled_map)
    assert holders > 50
    count = await service_map.count(ServiceFilter(all_capabilities=("cap0",)), bound=50)
    assert (count.value, count.exact) == (50, False)


async def test_summary_counts_services_and_nodes_by_class(
    service_map: ServiceMap, filled_map: list[Sighting]
) -> None:
    summary = await service_map.summary()
    assert summary.services == len(filled_map)
    assert summary.nodes == 23
    by_class = {c.node_class: c.services for c in summary.classes}
    assert by_class == {k: sum(s.node_class == k for s in filled_map) for k in CLASSES}


async def test_prune_forgets_only_what_was_not_seen_in_time(
    service_map: ServiceMap, filled_map: list[Sighting]
) -> None:
    removed = await service_map.prune(not_seen_for=timedelta(minutes=30), now=NOW)
    expected_gone = [s for s in filled_map if s.seen_at < NOW - timedelta(minutes=30)]
    assert removed == len(expected_gone) > 0
    kept = [s for s in filled_map if await service_map.get(s.service_id) is not None]
    assert all(s.seen_at >= NOW - timedelta(minutes=30) for s in kept)
    assert (await service_map.count()).value == len(filled_map) - removed
    # The capability index forgets them too.
    gone = await service_map.find(ServiceFilter(all_capabilities=("cap0",)), limit=1000)
    assert {s.service_id for s in gone.items}.isdisjoint(s.service_id for s in expected_gone)


@pytest.mark.parametrize("cursor", ["", "bm90IG91cnM", "!!!", "czE6" + "A" * 400, "czE6AA"])
async def test_a_cursor_ronin_did_not_issue_is_refused(
    service_map: ServiceMap, cursor: str
) -> None:
    with pytest.raises(InvalidCursor):
        await service_map.find(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_page_size_is_bounded(service_map: ServiceMap, limit: int) -> None:
    with pytest.raises(InvalidValue, match="limit"):
        await service_map.find(limit=limit)


@pytest.mark.parametrize("asked", ["griot", "GRIOT", "gRiOt"])
async def test_a_canonical_class_is_found_whatever_case_it_is_asked_in(
    service_map: ServiceMap, filled_map: list[Sighting], asked: str
) -> None:
    griots = sorted(s.service_id for s in filled_map if s.node_class == "Griot")
    with_cap0 = sorted(
        s.service_id for s in filled_map if s.node_class == "Griot" and "cap0" in s.capabilities
    )
    assert griots
    assert with_cap0
    page = await service_map.find(ServiceFilter(node_class=asked), limit=1000)
    assert [s.service_id for s in page.items] == griots
    by_capability = ServiceFilter(all_capabilities=("cap0",), node_class=asked)
    page = await service_map.find(by_capability, limit=1000)
    assert [s.service_id for s in page.items] == with_cap0
    nodes = await service_map.nodes(node_class=asked)
    assert {n.node_id for n in nodes.items} == {
        s.node_id for s in filled_map if s.node_class == "Griot"
    }


async def test_other_classes_match_exactly_and_canonical_ones_are_stored_canonical(
    service_map: ServiceMap,
) -> None:
    def seen(service_id: str, node_class: str) -> Sighting:
        return Sighting(
            service_id=service_id,
            node_id=f"did:kos:node:{service_id}",
            node_class=node_class,
            endpoint="http://10.1.0.1:30437/",
            capabilities=("cap0",),
            seen_at=NOW,
        )

    await service_map.upsert([seen("a", "Wanderer"), seen("b", "wanderer"), seen("c", "MUSA")])
    for asked, expected in [("Wanderer", ["a"]), ("wanderer", ["b"]), ("WANDERER", [])]:
        page = await service_map.find(ServiceFilter(node_class=asked), limit=10)
        assert [s.service_id for s in page.items] == expected, asked
    stored = await service_map.get("c")
    assert stored is not None
    assert stored.node_class == "Musa"

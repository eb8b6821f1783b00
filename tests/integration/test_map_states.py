"""Map queries and the liveness of services: gone ones hidden unless asked for, every answer
carries its state (PROTOCOL.md section 8)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.errors import InvalidValue
from ronin.store.liveness import LivenessStore, Timing
from ronin.store.models import ServiceFilter
from ronin.store.services import ServiceMap
from tests.integration.map_states_support import (
    CHECKED,
    MAP,
    NOW,
    SINCE,
    fill_states_map,
    numbers,
    sid,
)


@pytest.fixture
async def states_map(service_map: ServiceMap, db_url: str) -> ServiceMap:
    return await fill_states_map(service_map, db_url)


NOT_GONE = [1, 3, 4, 7, 8]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (ServiceFilter(), NOT_GONE),
        (ServiceFilter(states=("gone",)), [2, 5, 6]),
        (ServiceFilter(states=("suspect", "unverified")), [3, 4, 8]),
        (ServiceFilter(states=("alive", "suspect", "gone", "unverified")), list(MAP)),
        (ServiceFilter(all_capabilities=("klf",)), [1, 3, 7]),
        (ServiceFilter(all_capabilities=("klf",), states=("gone",)), [5]),
        (ServiceFilter(all_capabilities=("klf", "music.play")), [3]),
        (ServiceFilter(any_capabilities=("story.tell", "music.play")), [1, 3, 4, 8]),
        (ServiceFilter(any_capabilities=("story.tell", "klf"), states=("gone",)), [2, 5]),
        (ServiceFilter(node_class="Musa"), [3, 4]),
        (ServiceFilter(node_class="Musa", states=("gone", "unverified")), [4, 5, 6]),
        (ServiceFilter(node_id="did:kos:node:03"), []),
        (ServiceFilter(seen_since=NOW - timedelta(minutes=1), states=("gone",)), [2, 5, 6]),
    ],
)
async def test_map_queries_hide_gone_services_unless_a_state_asks(
    states_map: ServiceMap, where: ServiceFilter, expected: list[int]
) -> None:
    assert numbers((await states_map.find(where)).items) == expected
    assert (await states_map.count(where)).value == len(expected)


@pytest.mark.parametrize(
    "where",
    [
        ServiceFilter(),
        ServiceFilter(states=("gone", "alive")),
        ServiceFilter(all_capabilities=("story.tell",), states=("alive", "gone", "suspect")),
        ServiceFilter(any_capabilities=("music.play", "story.tell")),
        ServiceFilter(any_capabilities=("klf", "story.tell"), states=("gone", "suspect")),
    ],
)
async def test_pages_of_a_state_filtered_query_join_up_without_gaps(
    states_map: ServiceMap, where: ServiceFilter
) -> None:
    everything = numbers((await states_map.find(where, limit=100)).items)
    walked: list[int] = []
    cursor = None
    while True:
        page = await states_map.find(where, limit=2, cursor=cursor)
        walked += numbers(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == everything
    assert len(everything) >= 3


async def test_every_service_carries_its_state_since_when_and_its_last_check(
    states_map: ServiceMap,
) -> None:
    page = await states_map.find(ServiceFilter(states=("gone", "suspect")), limit=100)
    by_number = {int(s.service_id[-3:]): s for s in page.items}
    assert {n: s.state for n, s in by_number.items()} == {
        2: "gone",
        3: "suspect",
        5: "gone",
        6: "gone",
        8: "suspect",
    }
    assert {s.state_since for s in page.items} == {SINCE}
    assert {s.last_checked for s in page.items} == {CHECKED}
    capable = await states_map.find(ServiceFilter(all_capabilities=("klf",), states=("gone",)))
    assert [(s.state, s.state_since, s.last_checked) for s in capable.items] == [
        ("gone", SINCE, CHECKED)
    ]
    fresh = await states_map.get(sid(1))
    assert fresh is not None
    assert fresh.state == "alive"
    assert fresh.last_checked is None
    gone = await states_map.get(sid(2))
    assert gone is not None
    assert (gone.state, gone.state_since) == ("gone", SINCE)


async def test_a_service_without_a_liveness_row_reads_as_alive(
    states_map: ServiceMap, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM service_liveness WHERE service_id = %s", (sid(2),))
    page = await states_map.find(ServiceFilter(node_id="did:kos:node:01"))
    assert numbers(page.items) == [1, 2]
    rowless = page.items[1]
    assert (rowless.state, rowless.state_since, rowless.last_checked) == (
        "alive",
        rowless.last_seen,
        None,
    )
    assert numbers((await states_map.find(ServiceFilter(states=("alive",)))).items) == [1, 2, 7]
    assert (await states_map.counts_by_state())["alive"] == 3


async def test_nodes_hide_gone_services_and_nodes_with_nothing_else(
    states_map: ServiceMap,
) -> None:
    page = await states_map.nodes()
    shown = {node.node_id[-2:]: numbers(node.services) for node in page.items}
    assert shown == {"01": [1], "02": [3, 4], "04": [7, 8]}
    gone = await states_map.nodes(states=["gone"])
    assert {node.node_id[-2:]: numbers(node.services) for node in gone.items} == {
        "01": [2],
        "03": [5, 6],
    }
    assert [n.node_id[-2:] for n in (await states_map.nodes(limit=2)).items] == ["01", "02"]
    second = await states_map.nodes(limit=2, cursor=(await states_map.nodes(limit=2)).next_cursor)
    assert [n.node_id[-2:] for n in second.items] == ["04"]
    musa = await states_map.nodes(node_class="Musa", states=["gone", "unverified"])
    assert {node.node_id[-2:]: numbers(node.services) for node in musa.items} == {
        "02": [4],
        "03": [5, 6],
    }


async def test_a_state_outside_the_four_is_refused_naming_the_state_field(
    states_map: ServiceMap,
) -> None:
    with pytest.raises(InvalidValue) as refused:
        ServiceFilter(states=("dead",))  # type: ignore[arg-type]
    assert refused.value.field == "state"
    with pytest.raises(InvalidValue):
        await states_map.nodes(states=["dead"])


async def test_the_summary_counts_services_by_state(
    states_map: ServiceMap, pool: AsyncConnectionPool[Any]
) -> None:
    summary = await states_map.summary()
    expected = {"alive": 2, "suspect": 2, "gone": 3, "unverified": 1}
    assert summary.states == expected
    assert summary.services == len(MAP)
    assert await states_map.counts_by_state() == expected
    liveness = LivenessStore(pool, Timing.of(timedelta(seconds=60)))
    assert await liveness.counts_by_state() == expected


async def test_pruning_by_age_still_removes_services_in_any_state(
    states_map: ServiceMap,
) -> None:
    later = NOW + timedelta(hours=1)
    removed = await states_map.prune(not_seen_for=timedelta(minutes=1), now=later)
    assert removed == len(MAP)
    assert (await states_map.summary()).states == dict.fromkeys(
        ("alive", "suspect", "gone", "unverified"), 0
    )

"""``/v1/services`` and ``/v1/nodes`` and the liveness of services: gone ones only on
``state``, every service with its state, a bad state refused in the one error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.services import ServiceMap
from tests.integration.api_support import api_client, assert_error
from tests.integration.map_states_support import (
    CHECKED,
    MAP,
    SINCE,
    fill_states_map,
    set_states,
    sid,
)


@pytest.fixture
async def states_map(service_map: ServiceMap, db_url: str) -> ServiceMap:
    return await fill_states_map(service_map, db_url)


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any], states_map: ServiceMap) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


def numbers(answer: httpx.Response) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [int(item["service_id"][-3:]) for item in answer.json()["items"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [1, 3, 4, 7, 8]),
        ({"state": "gone"}, [2, 5, 6]),
        ({"state": ["suspect", "unverified"]}, [3, 4, 8]),
        ({"state": ["gone", "alive"], "capability": "klf"}, [1, 5, 7]),
        ({"state": "gone", "node_class": "Musa"}, [5, 6]),
        ({"any_capability": ["story.tell", "klf"], "state": ["gone", "suspect"]}, [2, 3, 5, 8]),
    ],
)
async def test_services_hide_gone_ones_unless_a_state_asks(
    client: httpx.AsyncClient, params: dict[str, Any], expected: list[int]
) -> None:
    assert numbers(await client.get("/v1/services", params=params)) == expected


async def test_a_state_filtered_query_comes_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    params: dict[str, Any] = {"state": ["gone", "suspect"], "limit": 2}
    first = await client.get("/v1/services", params=params)
    cursor = first.json()["next_cursor"]
    second = await client.get("/v1/services", params=params | {"cursor": cursor})
    third = await client.get(
        "/v1/services", params=params | {"cursor": second.json()["next_cursor"]}
    )
    assert numbers(first) + numbers(second) + numbers(third) == [2, 3, 5, 6, 8]


async def test_every_service_answered_carries_its_state(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/services", params={"state": ["gone", "alive"]})
    items = {int(item["service_id"][-3:]): item for item in answer.json()["items"]}
    assert {n: item["state"] for n, item in items.items()} == {
        n: state for n, (_, _, _, state) in MAP.items() if state in ("gone", "alive")
    }
    gone = items[2]
    assert gone["state_since"] == SINCE.isoformat().replace("+00:00", "Z")
    assert gone["last_checked"] == CHECKED.isoformat().replace("+00:00", "Z")
    assert items[1]["last_checked"] is None
    one = (await client.get(f"/v1/services/{sid(5)}")).json()
    assert (one["state"], one["state_since"]) == ("gone", gone["state_since"])


async def test_nodes_hide_gone_services_and_nodes_with_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    answer = (await client.get("/v1/nodes")).json()
    assert {n["node_id"][-2:]: [s["state"] for s in n["services"]] for n in answer["items"]} == {
        "01": ["alive"],
        "02": ["suspect", "unverified"],
        "04": ["alive", "suspect"],
    }
    gone = (await client.get("/v1/nodes", params={"state": "gone"})).json()
    assert [n["node_id"][-2:] for n in gone["items"]] == ["01", "03"]


@pytest.mark.parametrize("path", ["/v1/services", "/v1/nodes"])
@pytest.mark.parametrize("params", [{"state": "dead"}, {"state": ["gone", "GONE"]}])
async def test_a_state_outside_the_four_is_refused_in_the_one_shape(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    assert_error(await client.get(path, params=params), 422, "INVALID_VALUE", "state")


async def test_the_cache_keeps_each_state_filter_apart(
    db_url: str, pool: AsyncConnectionPool[Any], states_map: ServiceMap
) -> None:
    async with api_client(db_url, pool, api_cache_s=60) as client:
        assert numbers(await client.get("/v1/services")) == [1, 3, 4, 7, 8]
        assert numbers(await client.get("/v1/services", params={"state": "gone"})) == [2, 5, 6]
        set_states(db_url, {1: "gone"})
        # Each answer kept under its own query: the default one is served from memory...
        assert numbers(await client.get("/v1/services")) == [1, 3, 4, 7, 8]
        assert numbers(await client.get("/v1/services", params={"state": "gone"})) == [2, 5, 6]
        # ...and a state filter not asked before is answered from the database.
        fresh = await client.get("/v1/services", params={"state": ["gone", "suspect"]})
        assert numbers(fresh) == [1, 2, 3, 5, 6, 8]


async def test_metrics_count_services_by_state_from_the_database(
    client: httpx.AsyncClient,
) -> None:
    metrics = (await client.get("/metrics")).text
    for state, count in {"alive": 2, "suspect": 2, "gone": 3, "unverified": 1}.items():
        assert f'ronin_services_by_state{{state="{state}"}} {count}.0' in metrics
    assert f"ronin_services {len(MAP)}.0" in metrics
    assert "# TYPE ronin_liveness_transitions_total counter" in metrics
    assert "# TYPE ronin_liveness_guard_trips_total counter" in metrics

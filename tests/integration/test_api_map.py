"""``/v1/services`` and ``/v1/nodes``: the map over HTTP, with every filter, in-process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.integration.api_support import READ_TOKEN, TOKENS, api_client, assert_error

NOW = datetime.now(UTC)


def sighting(
    number: int, node: int, node_class: str, *capabilities: str, age_h: float = 0
) -> Sighting:
    return Sighting(
        service_id=f"did:kos:service:{number:03d}",
        node_id=f"did:kos:node:{node:02d}",
        node_class=node_class,
        endpoint=f"http://127.0.0.{node}:30437/klf",
        capabilities=capabilities,
        seen_at=NOW - timedelta(hours=age_h),
    )


MAP = [
    sighting(1, 1, "Griot", "story.tell", "klf"),
    sighting(2, 1, "Griot", "story.archive"),
    sighting(3, 2, "Tohunga", "heal", "klf", age_h=0.5),
    sighting(4, 3, "Musa", "music.play", "klf", age_h=0.9),
    sighting(5, 3, "Musa", "music.play"),
]


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap) -> Any:
    await service_map.upsert(MAP)
    async with api_client(db_url, pool) as opened:
        yield opened


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["service_id"][-3:] for item in answer.json()["items"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["001", "002", "003", "004", "005"]),
        ({"capability": "klf"}, ["001", "003", "004"]),
        ({"capability": ["klf", "music.play"]}, ["004"]),
        ({"any_capability": ["heal", "story.archive"]}, ["002", "003"]),
        ({"node_class": "Musa"}, ["004", "005"]),
        ({"node_id": "did:kos:node:01"}, ["001", "002"]),
        ({"capability": "klf", "node_class": "Griot"}, ["001"]),
        ({"seen_since": "15m"}, ["001", "002", "005"]),
        ({"seen_since": (NOW - timedelta(hours=0.7)).isoformat()}, ["001", "002", "003", "005"]),
        ({"capability": "absent"}, []),
    ],
)
async def test_services_match_every_filter_given(
    client: httpx.AsyncClient, params: dict[str, Any], expected: list[str]
) -> None:
    assert ids(await client.get("/v1/services", params=params)) == expected


async def test_services_come_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/services", params={"limit": 2, "capability": "klf"})
    assert ids(first) == ["001", "003"]
    cursor = first.json()["next_cursor"]
    rest = await client.get(
        "/v1/services", params={"limit": 2, "capability": "klf", "cursor": cursor}
    )
    assert ids(rest) == ["004"]
    assert rest.json()["next_cursor"] is None


async def test_one_service_is_read_by_its_id(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/services/did:kos:service:003")
    assert answer.status_code == 200
    service = answer.json()
    assert service["node_class"] == "Tohunga"
    assert service["capabilities"] == ["heal", "klf"]
    assert service["endpoint"] == "http://127.0.0.2:30437/klf"
    assert_error(await client.get("/v1/services/did:kos:service:999"), 404, "NOT_FOUND")
    assert_error(await client.get("/v1/services/" + "x" * 300), 404, "NOT_FOUND")


async def test_nodes_group_services_by_node_a_page_at_a_time(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/nodes", params={"limit": 2})).json()
    assert [node["node_id"] for node in first["items"]] == ["did:kos:node:01", "did:kos:node:02"]
    assert [len(node["services"]) for node in first["items"]] == [2, 1]
    rest = (
        await client.get("/v1/nodes", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    [musa] = rest["items"]
    assert musa["node_class"] == "Musa"
    assert [s["service_id"] for s in musa["services"]] == [
        "did:kos:service:004",
        "did:kos:service:005",
    ]
    assert rest["next_cursor"] is None
    griots = (await client.get("/v1/nodes", params={"node_class": "Griot"})).json()
    assert [node["node_id"] for node in griots["items"]] == ["did:kos:node:01"]


@pytest.mark.parametrize(
    ("params", "status", "code", "field"),
    [
        ({"cursor": "not-a-cursor"}, 400, "INVALID_CURSOR", "cursor"),
        ({"limit": 1001}, 422, "INVALID_VALUE", "limit"),
        ({"limit": "many"}, 422, "INVALID_VALUE", "limit"),
        ({"capability": "x" * 129}, 422, "INVALID_VALUE", None),
        ({"capability": "bad\x00cap"}, 422, "UNSTORABLE_VALUE", None),
        ({"capability": [f"c{i}" for i in range(33)]}, 422, "INVALID_VALUE", "capability"),
        ({"node_class": "x" * 101}, 422, "INVALID_VALUE", "node_class"),
        ({"seen_since": "yesterday"}, 422, "INVALID_VALUE", "seen_since"),
        ({"seen_since": "2026-11-29T00:00:00"}, 422, "INVALID_VALUE", "seen_since"),
        ({"seen_since": "99999999999d"}, 422, "INVALID_VALUE", "seen_since"),
    ],
)
async def test_bad_map_queries_get_a_4xx_in_the_one_shape(
    client: httpx.AsyncClient, params: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    assert_error(await client.get("/v1/services", params=params), status, code, field)


async def test_a_map_read_is_answered_from_memory_for_the_cache_period(
    db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap
) -> None:
    newcomer = sighting(6, 4, "Hakim", "klf")
    async with api_client(db_url, pool, api_cache_s=0.5) as client:
        before = ids(await client.get("/v1/services", params={"capability": "klf"}))
        await service_map.upsert([newcomer])
        assert ids(await client.get("/v1/services", params={"capability": "klf"})) == before
        await asyncio.sleep(0.6)
        after = ids(await client.get("/v1/services", params={"capability": "klf"}))
        assert after == [*before, "006"]


async def test_without_the_cache_every_read_sees_the_map_as_it_is(
    db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap
) -> None:
    async with api_client(db_url, pool, api_cache_s=0) as client:
        assert ids(await client.get("/v1/services", params={"node_class": "Hakim"})) == []
        await service_map.upsert([sighting(6, 4, "Hakim", "klf")])
        assert ids(await client.get("/v1/services", params={"node_class": "Hakim"})) == ["006"]


async def test_the_cache_never_answers_a_request_without_a_valid_token(
    db_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    async with api_client(db_url, pool, api_tokens=TOKENS) as client:
        reader = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert (await client.get("/v1/services", headers=reader)).status_code == 200
        assert_error(await client.get("/v1/services"), 401, "UNAUTHENTICATED")
        wrong = {"Authorization": "Bearer not-a-known-token-1234"}
        assert_error(await client.get("/v1/services", headers=wrong), 401, "UNAUTHENTICATED")

"""GET /v1/graph, /v1/graph/nodes and /v1/nodes/{node_id}: the shape the dashboard reads
(/tmp/dash_interface.md), filters, the cursor, placement, a node's links and history."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.store.layout import NEAR_MAX
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.integration.api_support import api_client, assert_error
from tests.integration.map_states_support import NOW, fill_states_map, set_states, sid

JOB = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
NODE_KEYS = {"id", "class", "state", "services", "capabilities", "x", "y"}
LINK_KEYS = {"source", "target", "first_seen", "last_seen", "job_id"}


def nid(number: int) -> str:
    return f"did:kos:node:{number:02d}"


@pytest.fixture
async def client(
    db_url: str, pool: AsyncConnectionPool[Any], service_map: ServiceMap
) -> AsyncIterator[httpx.AsyncClient]:
    """The states map (nodes 1 and 4 Griot, 2 and 3 Musa) with links 1->2, 2->3, 4->1."""
    await fill_states_map(service_map, db_url)
    await service_map.links.record(JOB, [(nid(1), nid(2)), (nid(2), nid(3)), (nid(4), nid(1))])
    async with api_client(db_url, pool, api_cache_s=0) as opened:
        yield opened


async def graph(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get("/v1/graph", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_the_graph_has_the_dashboards_shape(client: httpx.AsyncClient) -> None:
    body = await graph(client)
    assert set(body) == {"cursor", "summary", "nodes", "links"}
    assert len(body["cursor"]) == 16
    assert body["cursor"].isdigit()
    assert body["summary"] == {
        "nodes": 4,
        "links": 3,
        "by_state": {"alive": 2, "suspect": 1, "gone": 1, "unverified": 0},
        "by_class": {"Griot": 2, "Musa": 2},
    }
    nodes = {node["id"]: node for node in body["nodes"]}
    assert all(set(node) == NODE_KEYS for node in nodes.values())
    assert {i: (n["class"], n["state"], n["services"]) for i, n in nodes.items()} == {
        nid(1): ("Griot", "alive", 2),  # alive and gone: alive
        nid(2): ("Musa", "suspect", 2),  # suspect beats unverified
        nid(3): ("Musa", "gone", 2),  # gone nodes are drawn too
        nid(4): ("Griot", "alive", 2),
    }
    assert nodes[nid(1)]["capabilities"] == ["klf", "story.tell"]
    assert all(isinstance(n["x"], float) and isinstance(n["y"], float) for n in nodes.values())
    assert all(set(link) == LINK_KEYS for link in body["links"])
    assert {(link["source"], link["target"]) for link in body["links"]} == {
        (nid(1), nid(2)),
        (nid(2), nid(3)),
        (nid(4), nid(1)),
    }
    link = body["links"][0]
    assert link["job_id"] == str(JOB)
    assert link["first_seen"].endswith("Z")
    assert link["last_seen"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "nodes", "links"),
    [
        ({"node_class": "musa"}, {2, 3}, {(2, 3)}),
        ({"state": "gone"}, {3}, set()),
        ({"state": ["suspect", "gone"]}, {2, 3}, {(2, 3)}),
        ({"state": "alive"}, {1, 4}, {(4, 1)}),
        ({"capability": ["klf", "story.tell"]}, {1, 4}, {(4, 1)}),
        ({"capability": ["klf", "music.play"]}, {2, 3}, {(2, 3)}),
        ({"capability": "nothing"}, set(), set()),
        ({"node_class": "Griot", "state": "suspect"}, set(), set()),
    ],
)
async def test_filters_narrow_the_nodes_and_links_join_the_nodes_returned(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    nodes: set[int],
    links: set[tuple[int, int]],
) -> None:
    body = await graph(client, **params)
    assert {node["id"] for node in body["nodes"]} == {nid(n) for n in nodes}
    assert {(k["source"], k["target"]) for k in body["links"]} == {
        (nid(a), nid(b)) for a, b in links
    }
    assert body["summary"]["nodes"] == len(nodes)
    assert body["summary"]["links"] == len(links)


async def test_an_unknown_state_is_refused(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/graph", params={"state": "dead"}), 422, "INVALID_VALUE")


async def test_the_cursor_is_the_feeds_and_later_changes_follow_it(
    client: httpx.AsyncClient, db_url: str
) -> None:
    body = await graph(client)
    now = (await client.get("/v1/changes")).json()["cursor"]
    assert body["cursor"] == now
    set_states(db_url, {1: "suspect"})
    changes = (await client.get("/v1/changes", params={"since": body["cursor"]})).json()
    assert [(c["type"], c["service_id"], c["to"]) for c in changes["changes"]] == [
        ("service_state", sid(1), "suspect")
    ]
    assert (await graph(client))["cursor"] == changes["cursor"]


async def test_positions_are_stored_once_and_new_nodes_land_beside_their_referrer(
    client: httpx.AsyncClient, service_map: ServiceMap
) -> None:
    first = {n["id"]: (n["x"], n["y"]) for n in (await graph(client))["nodes"]}
    again = {n["id"]: (n["x"], n["y"]) for n in (await graph(client))["nodes"]}
    assert first == again
    assert len(set(first.values())) == 4
    filtered = await graph(client, node_class="Musa")
    assert {n["id"]: (n["x"], n["y"]) for n in filtered["nodes"]} == {
        nid(2): first[nid(2)],
        nid(3): first[nid(3)],
    }

    newcomer = "did:kos:node:99"
    await service_map.upsert(
        [Sighting("did:kos:service:999", newcomer, "Hakim", "http://127.0.0.9/", ("x",), NOW)]
    )
    await service_map.links.record(JOB, [(nid(3), newcomer)])
    answer = await client.get("/v1/graph/nodes", params={"ids": [newcomer, nid(1), "did:x:y"]})
    assert answer.status_code == 200, answer.text
    nodes = {n["id"]: n for n in answer.json()["nodes"]}
    assert set(nodes) == {newcomer, nid(1)}
    assert set(nodes[newcomer]) == NODE_KEYS
    assert (nodes[nid(1)]["x"], nodes[nid(1)]["y"]) == first[nid(1)]
    links = {(link["source"], link["target"]) for link in answer.json()["links"]}
    assert (nid(3), newcomer) in links  # the page draws a newcomer's links with it
    assert all(newcomer in pair or nid(1) in pair for pair in links)
    spot = (nodes[newcomer]["x"], nodes[newcomer]["y"])
    assert math.dist(spot, first[nid(3)]) <= NEAR_MAX + 0.01
    full = {n["id"]: (n["x"], n["y"]) for n in (await graph(client))["nodes"]}
    assert full == first | {newcomer: spot}


async def test_at_most_200_ids_are_asked_at_once(client: httpx.AsyncClient) -> None:
    ids = [f"did:kos:node:{i}" for i in range(201)]
    assert_error(await client.get("/v1/graph/nodes", params={"ids": ids}), 422, "INVALID_VALUE")
    answer = await client.get("/v1/graph/nodes")
    assert answer.json() == {"nodes": [], "links": []}


async def test_a_node_shows_its_services_links_both_ways_and_state_history(
    client: httpx.AsyncClient, db_url: str
) -> None:
    set_states(db_url, {3: "gone"})
    answer = await client.get(f"/v1/nodes/{nid(2)}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {
        "node_id",
        "class",
        "state",
        "services",
        "referred_by",
        "refers_to",
        "history",
    }
    # Its suspect service is gone now: the node is as good as its unverified one.
    assert (body["node_id"], body["class"], body["state"]) == (nid(2), "Musa", "unverified")
    assert [s["service_id"] for s in body["services"]] == [sid(3), sid(4)]
    assert {s["state"] for s in body["services"]} == {"gone", "unverified"}
    assert [end["node_id"] for end in body["referred_by"]] == [nid(1)]
    assert [end["node_id"] for end in body["refers_to"]] == [nid(3)]
    assert set(body["refers_to"][0]) == {"node_id", "first_seen", "last_seen", "job_id"}
    assert body["refers_to"][0]["job_id"] == str(JOB)
    history = body["history"]
    assert [(h["service_id"], h["from"], h["to"]) for h in history] == [
        (sid(3), "suspect", "gone"),
        (sid(4), "alive", "unverified"),
        (sid(3), "alive", "suspect"),
    ]
    assert [h["cursor"] for h in history] == sorted((h["cursor"] for h in history), reverse=True)
    assert set(history[0]) == {"cursor", "at", "service_id", "from", "to"}


async def test_an_unknown_node_is_not_found_and_the_node_list_still_answers(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get("/v1/nodes/did:kos:nobody:0"), 404, "NOT_FOUND", "node_id")
    assert_error(await client.get("/v1/nodes/" + "d" * 300), 404, "NOT_FOUND", "node_id")
    listed = await client.get("/v1/nodes")
    assert listed.status_code == 200
    assert {n["node_id"] for n in listed.json()["items"]} == {nid(1), nid(2), nid(4)}

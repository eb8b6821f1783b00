"""First pages are short index walks, not a fetch-and-sort of every match."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from ronin.store.models import Service, ServiceFilter, Sighting
from ronin.store.queries import query
from ronin.store.services import ServiceMap
from tests.support.plans import explain

ROWS = 20_000


@pytest.fixture
async def large_map(service_map: ServiceMap, db_url: str) -> str:
    rng = random.Random(3)
    now = datetime.now(UTC)
    await service_map.upsert(
        Sighting(
            service_id=f"did:kos:service:{i:06d}",
            node_id=f"did:kos:node:{i // 4}",
            node_class="Hakim" if i % 200 == 0 else ("Griot", "Musa", "Skald")[i % 3],
            endpoint="http://10.0.0.1:30437/",
            capabilities=("common",) + (("medium",) if rng.random() < 0.02 else ()),
            seen_at=now,
        )
        for i in range(ROWS)
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return db_url


def page_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = dict.fromkeys(("node_class", "node_id", "seen_since", "after"))
    default_states = ["alive", "suspect", "unverified"]
    return params | {"limit": 100, "also_required": [], "states": default_states} | overrides


@pytest.mark.parametrize(
    ("capability", "also_required"), [("common", []), ("medium", []), ("medium", ["common"])]
)
@pytest.mark.parametrize("node_class", [None, "Musa"])
def test_a_capability_page_walks_the_capability_index(
    large_map: str, capability: str, also_required: list[str], node_class: str | None
) -> None:
    nodes = explain(
        large_map,
        "find_services_by_capability",
        page_params(drivers=[capability], node_class=node_class, also_required=also_required),
    )
    walks = [n for n in nodes if n.get("Relation Name") == "service_capabilities"]
    assert walks, nodes
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in walks)
    # Never a GIN bitmap over every holder, sorted before the first row comes out.
    assert "Bitmap Heap Scan" not in {n["Node Type"] for n in nodes}
    # Nothing reads discovered_services except by primary key, one page's worth.
    services = [n for n in nodes if n.get("Relation Name") == "discovered_services"]
    assert all(n["Node Type"] == "Index Scan" for n in services)
    assert all(n["Index Name"] == "discovered_services_pkey" for n in services)


def test_a_large_class_page_is_an_ordered_index_walk(large_map: str) -> None:
    nodes = explain(large_map, "find_services", page_params(node_class="Musa"))
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Seq Scan")]


async def test_an_all_of_search_is_driven_by_its_rarest_capability(
    service_map: ServiceMap, large_map: str
) -> None:
    where = ServiceFilter(all_capabilities=("common", "medium"))
    async with service_map._connection() as conn:
        _, params = await service_map._page_query(conn, where, None, 100)
    assert params["drivers"] == ["medium"]


def _liveness_is_probed_by_key(nodes: list[dict[str, Any]], *, merged: bool = False) -> None:
    """The state filter reads service_liveness only by primary key, one probe per row the
    walk hands over, and nothing is read end to end or sorted (``merged``: but the pages of
    a capability search's walks, a few pages' worth)."""
    liveness = [n for n in nodes if n.get("Relation Name") == "service_liveness"]
    assert liveness, nodes
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in liveness)
    assert all(n["Index Name"] == "service_liveness_pkey" for n in liveness)
    assert not [n for n in nodes if n["Node Type"] in ("Seq Scan", "Hash Join", "Merge Join")]
    sorts = [n for n in nodes if n["Node Type"] == "Sort"]
    assert len(sorts) == (1 if merged else 0)
    assert all(n["Plans"][0]["Node Type"] == "Nested Loop" for n in sorts)


@pytest.mark.parametrize("node_class", [None, "Musa"])
def test_a_default_page_probes_liveness_within_the_ordered_walk(
    large_map: str, node_class: str | None
) -> None:
    nodes = explain(large_map, "find_services", page_params(node_class=node_class))
    _liveness_is_probed_by_key(nodes)


@pytest.mark.parametrize("states", [["alive", "suspect", "unverified"], ["gone"]])
def test_a_capability_page_probes_liveness_by_key(large_map: str, states: list[str]) -> None:
    params = page_params(drivers=["common"], states=states)
    nodes = explain(large_map, "find_services_by_capability", params)
    _liveness_is_probed_by_key(nodes, merged=True)
    walks = [n for n in nodes if n.get("Relation Name") == "service_capabilities"]
    assert walks
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in walks)


def test_a_nodes_page_probes_liveness_by_key(large_map: str) -> None:
    params = {"after": None, "node_class": None, "limit": 50}
    nodes = explain(large_map, "nodes_page", params | {"states": ["alive", "suspect"]})
    liveness = [n for n in nodes if n.get("Relation Name") == "service_liveness"]
    assert liveness
    assert all(n["Index Name"] == "service_liveness_pkey" for n in liveness)
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}


@pytest.mark.parametrize("name", ["find_services", "find_services_by_capability"])
def test_a_page_query_selects_the_service_fields_in_order(large_map: str, name: str) -> None:
    # ServiceMap.find builds each Service from its row by position.
    params = page_params(drivers=["medium"])
    with psycopg.connect(large_map) as conn:
        cur = conn.execute(query(name), params, prepare=False)
        columns = [column.name for column in cur.description or ()]
    assert columns == [f.name for f in dataclasses.fields(Service)]

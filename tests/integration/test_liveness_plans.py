"""Claiming due nodes and recording their checks are index walks of the batch's own rows,
never a scan of the map, whatever its size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ronin.store.liveness import _RULE_PARAMS
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap
from tests.support.plans import explain

ROWS = 20_000
PARKED_NODES = 50_000
MAP_TABLES = {"discovered_services", "service_liveness", "node_checks"}
# Every read of a map table is by index or by row address (Index, Index Only, Bitmap or TID
# scans); what must never appear is a Seq Scan.


@pytest.fixture
async def large_map(service_map: ServiceMap, db_url: str) -> str:
    now = datetime.now(UTC)
    await service_map.upsert(
        Sighting(
            service_id=f"did:kos:service:{i:06d}",
            node_id=f"did:kos:node:{i // 4}",
            node_class="Griot",
            endpoint=f"http://10.0.{i // 1000}.{i % 250}:30437/",
            capabilities=("common",),
            seen_at=now,
        )
        for i in range(ROWS)
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO node_checks (node_id, descriptor_url, next_check_at) "
            "SELECT node_id, 'http://10.0.0.1:30437/.well-known/kos-node', "
            "now() + random() * interval '1 minute' "
            "FROM (SELECT DISTINCT node_id FROM discovered_services) AS nodes"
        )
        # Nodes beyond the map's (parked: nothing due) make node_checks as large as a real
        # map's, where a batch's 100 rows are a sliver: a small table lets a planner (PG 15's)
        # read it whole, which says nothing of a large one.
        conn.execute(
            "INSERT INTO node_checks (node_id, descriptor_url, next_check_at) "
            "SELECT 'did:kos:parked:' || n, 'http://10.0.0.1:30437/.well-known/kos-node', "
            "'infinity' FROM generate_series(1, %s) AS n",
            (PARKED_NODES,),
        )
        conn.execute("TRUNCATE node_check_requests")
        conn.execute("ANALYZE")
    return db_url


def scans(nodes: list[dict[str, Any]]) -> dict[str, set[str]]:
    """How each map table is read: its scan node types."""
    found: dict[str, set[str]] = {}
    for node in nodes:
        if node.get("Relation Name") in MAP_TABLES and "Scan" in node["Node Type"]:
            found.setdefault(node["Relation Name"], set()).add(node["Node Type"])
    return found


def test_claiming_walks_the_due_index_and_reads_only_the_claimed_nodes(large_map: str) -> None:
    nodes = explain(
        large_map,
        "claim_node_checks",
        {"worker_id": "w1", "batch": 100, "lease": timedelta(seconds=30), "now": None},
    )
    found = scans(nodes)
    assert found.keys() == MAP_TABLES
    assert not any("Seq Scan" in kinds for kinds in found.values()), found
    assert any(n.get("Index Name") == "idx_node_checks_due" for n in nodes)


def test_recording_a_batch_reads_only_its_nodes_services(large_map: str) -> None:
    numbers = range(0, 5000, 50)
    node_ids = [f"did:kos:node:{n}" for n in numbers]
    params = {
        "worker_id": "w1",
        "now": None,
        "guarded": False,
        "interval": timedelta(seconds=60),
        "retry": timedelta(seconds=12),
        "confirm": timedelta(seconds=24),
        "node_ids": node_ids,
        "rounds": [1] * len(node_ids),
        "answered": [True] * len(node_ids),
        "urls": [None] * len(node_ids),
        "held_nodes": [n for n in node_ids for _ in range(4)],
        "held_services": [
            f"did:kos:service:{int(n.rsplit(':', 1)[1]) * 4 + k:06d}"
            for n in node_ids
            for k in range(4)
        ],
        "listed_nodes": node_ids,
        "listed_services": [
            f"did:kos:service:{int(n.rsplit(':', 1)[1]) * 4:06d}" for n in node_ids
        ],
        **_RULE_PARAMS,
    }
    nodes = explain(large_map, "record_checks", params)
    found = scans(nodes)
    assert found.keys() == MAP_TABLES
    assert not any("Seq Scan" in kinds for kinds in found.values()), found

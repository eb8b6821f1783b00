"""Upserting sightings: idempotent refreshes, the ownership rule, and what a batch reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ronin.store.models import Sighting
from ronin.store.services import ServiceMap

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def sighting(
    service_id: str = "did:kos:service:a1:packages",
    node_id: str = "did:kos:griot:a1",
    *,
    seen_at: datetime | None = None,
    capabilities: tuple[str, ...] = ("package_distribution", "knowledge_preservation"),
    endpoint: str = "http://10.0.0.5:30437/klf",
    node_class: str = "Griot",
    **metadata: Any,
) -> Sighting:
    return Sighting(
        service_id=service_id,
        node_id=node_id,
        node_class=node_class,
        endpoint=endpoint,
        capabilities=capabilities,
        seen_at=seen_at or datetime.now(UTC),
        metadata={"discovery_method": "http_probe", **metadata},
    )


def capability_rows(db_url: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT capability, service_id, node_class FROM service_capabilities"
        ).fetchall()
    return set(rows)


async def test_first_sighting_inserts_and_the_next_refreshes(service_map: ServiceMap) -> None:
    first = await service_map.upsert([sighting(seen_at=T0, response_time_ms=12)])
    assert first.inserted == ["did:kos:service:a1:packages"]
    assert first.refreshed == first.conflicts == first.outdated == []

    later = T0 + timedelta(minutes=5)
    second = await service_map.upsert(
        [sighting(seen_at=later, endpoint="http://10.0.0.9:30437/klf", response_time_ms=7)]
    )
    assert second.refreshed == ["did:kos:service:a1:packages"]
    assert second.inserted == []

    stored = await service_map.get("did:kos:service:a1:packages")
    assert stored is not None
    assert stored.endpoint == "http://10.0.0.9:30437/klf"
    assert stored.last_seen == later
    assert stored.discovery_metadata["response_time_ms"] == 7
    assert stored.discovery_metadata["first_seen"] == T0.isoformat()
    assert stored.capabilities == ["package_distribution", "knowledge_preservation"]


async def test_the_same_sighting_twice_changes_nothing(
    service_map: ServiceMap, db_url: str
) -> None:
    one = sighting(seen_at=T0)
    await service_map.upsert([one])
    before = await service_map.get(one.service_id)
    again = await service_map.upsert([one])
    assert again.refreshed == [one.service_id]
    assert await service_map.get(one.service_id) == before
    assert len(capability_rows(db_url)) == 2


async def test_a_service_held_by_another_node_stays_with_its_owner(
    service_map: ServiceMap,
) -> None:
    now = datetime.now(UTC)
    await service_map.upsert([sighting(node_id="did:kos:griot:owner", seen_at=now)])
    result = await service_map.upsert(
        [
            sighting(
                node_id="did:kos:musa:impostor",
                seen_at=now + timedelta(seconds=1),
                endpoint="http://10.6.6.6:30437/evil",
            )
        ]
    )
    assert result.inserted == result.refreshed == []
    [conflict] = result.conflicts
    assert conflict.service_id == "did:kos:service:a1:packages"
    assert conflict.claimed_by == "did:kos:musa:impostor"
    assert conflict.owner == "did:kos:griot:owner"
    assert conflict.owner_last_seen == now
    stored = await service_map.get(conflict.service_id)
    assert stored is not None
    assert (stored.node_id, stored.endpoint) == ("did:kos:griot:owner", "http://10.0.0.5:30437/klf")


async def test_a_stale_service_may_be_taken_over(service_map: ServiceMap, db_url: str) -> None:
    stale = datetime.now(UTC) - service_map.freshness_window - timedelta(minutes=1)
    await service_map.upsert([sighting(node_id="did:kos:griot:gone", seen_at=stale)])
    result = await service_map.upsert(
        [sighting(node_id="did:kos:musa:heir", node_class="Musa", capabilities=("storage",))]
    )
    assert result.refreshed == ["did:kos:service:a1:packages"]
    assert result.conflicts == []
    stored = await service_map.get("did:kos:service:a1:packages")
    assert stored is not None
    assert (stored.node_id, stored.node_class) == ("did:kos:musa:heir", "Musa")
    assert stored.discovery_metadata["first_seen"] != stale.isoformat()
    assert capability_rows(db_url) == {("storage", "did:kos:service:a1:packages", "Musa")}


async def test_an_older_sighting_does_not_roll_the_map_back(service_map: ServiceMap) -> None:
    await service_map.upsert([sighting(seen_at=T0, endpoint="http://10.0.0.2:30437/new")])
    result = await service_map.upsert(
        [sighting(seen_at=T0 - timedelta(hours=1), endpoint="http://10.0.0.1:30437/old")]
    )
    assert result.outdated == ["did:kos:service:a1:packages"]
    assert result.conflicts == []
    stored = await service_map.get("did:kos:service:a1:packages")
    assert stored is not None
    assert (stored.endpoint, stored.last_seen) == ("http://10.0.0.2:30437/new", T0)


async def test_duplicates_in_one_batch_keep_the_latest(service_map: ServiceMap) -> None:
    result = await service_map.upsert(
        [
            sighting(seen_at=T0 + timedelta(seconds=2), endpoint="http://10.0.0.2:1/latest"),
            sighting(seen_at=T0, endpoint="http://10.0.0.1:1/earlier"),
        ]
    )
    assert result.inserted == ["did:kos:service:a1:packages"]
    stored = await service_map.get("did:kos:service:a1:packages")
    assert stored is not None
    assert stored.endpoint == "http://10.0.0.2:1/latest"


async def test_batches_report_every_sighting_once(service_map: ServiceMap) -> None:
    now = datetime.now(UTC)
    await service_map.upsert([sighting(f"did:kos:service:n{i}", seen_at=now) for i in range(50)])
    mixed = [sighting(f"did:kos:service:n{i}", seen_at=now) for i in range(25, 75)]
    mixed.append(sighting("did:kos:service:n3", node_id="did:kos:other:x"))
    result = await service_map.upsert(mixed, batch_size=7)
    assert sorted(result.inserted) == sorted(f"did:kos:service:n{i}" for i in range(50, 75))
    assert sorted(result.refreshed) == sorted(f"did:kos:service:n{i}" for i in range(25, 50))
    assert [c.service_id for c in result.conflicts] == ["did:kos:service:n3"]


async def test_capability_index_follows_every_change(service_map: ServiceMap, db_url: str) -> None:
    sid = "did:kos:service:a1:packages"
    await service_map.upsert([sighting(seen_at=T0, capabilities=("a", "b", "b"))])
    assert capability_rows(db_url) == {("a", sid, "Griot"), ("b", sid, "Griot")}
    await service_map.upsert([sighting(seen_at=T0 + timedelta(1), capabilities=("b", "c"))])
    assert capability_rows(db_url) == {("b", sid, "Griot"), ("c", sid, "Griot")}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE discovered_services SET node_class = 'Skald'")
        assert capability_rows(db_url) == {("b", sid, "Skald"), ("c", sid, "Skald")}
        conn.execute("UPDATE discovered_services SET capabilities = NULL")
        assert capability_rows(db_url) == set()
        conn.execute("""UPDATE discovered_services SET capabilities = '["x"]'""")
        conn.execute("DELETE FROM discovered_services")
    assert capability_rows(db_url) == set()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "http://10.0.0.5/\x00"),
        ("node_class", "Gri\x00ot"),
        ("service_id", "did:kos:service:\ud800"),
        ("metadata", {"protocols": ["klf/1.0\x00"]}),
        ("metadata", {"response_time_ms": float("nan")}),
    ],
)
async def test_unstorable_values_are_refused_before_sql(field: str, value: Any) -> None:
    from ronin.errors import UnstorableValue

    kwargs: dict[str, Any] = {
        "service_id": "did:kos:service:a",
        "node_id": "did:kos:n:a",
        "node_class": "Griot",
        "endpoint": "http://10.0.0.5/",
        "capabilities": ("a",),
        "seen_at": T0,
    }
    kwargs[field] = value
    with pytest.raises(UnstorableValue) as raised:
        Sighting(**kwargs)
    assert raised.value.field is not None
    assert field.replace("metadata", "discovery_metadata") in raised.value.field

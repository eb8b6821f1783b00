"""Several connections upserting the same services at once: no error, no lost update."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg

from ronin.store.models import Sighting
from ronin.store.services import ServiceMap

SERVICES = 400
WRITERS = 6
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def writer_sightings(writer: int) -> list[Sighting]:
    """Every service, seen by this writer at its own instant, in a shuffled order."""
    rows = [
        Sighting(
            service_id=f"did:kos:service:{i:04d}",
            node_id=f"did:kos:node:{i % 37}",
            node_class="Tohunga",
            endpoint=f"http://10.0.{writer}.{i % 250}:30437/writer{writer}",
            capabilities=(f"cap{i % 5}", f"writer{writer}"),
            seen_at=T0 + timedelta(seconds=writer),
        )
        for i in range(SERVICES)
    ]
    random.Random(writer).shuffle(rows)
    return rows


async def test_concurrent_upserts_of_the_same_services(
    service_map: ServiceMap, db_url: str
) -> None:
    results = await asyncio.gather(
        *(service_map.upsert(writer_sightings(w), batch_size=50) for w in range(WRITERS))
    )
    assert all(not r.conflicts for r in results)
    assert sum(len(r.inserted) for r in results) == SERVICES
    for result in results:
        assert len(result.inserted) + len(result.refreshed) + len(result.outdated) == SERVICES

    latest = WRITERS - 1
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT endpoint, capabilities, last_seen FROM discovered_services"
        ).fetchall()
        capability_rows = conn.execute("SELECT count(*) FROM service_capabilities").fetchone()
    assert len(rows) == SERVICES
    # The latest writer's sighting wins everywhere, whatever order the batches ran in.
    assert all(endpoint.endswith(f"/writer{latest}") for endpoint, _, _ in rows)
    assert all(f"writer{latest}" in capabilities for _, capabilities, _ in rows)
    assert {last_seen for _, _, last_seen in rows} == {T0 + timedelta(seconds=latest)}
    assert capability_rows == (SERVICES * 2,)

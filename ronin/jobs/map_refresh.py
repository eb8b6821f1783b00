"""A changed descriptor updates the map as a sighting does (issue 12): what a re-check's
answer says beyond "alive".

The verifier keeps only service ids; this compares each answering node's descriptor with the
map's rows and upserts, as sightings, only the services whose node, class, endpoint,
capabilities or descriptor-given metadata changed (and those the node now lists that the map
does not hold for it). A re-check that changed nothing writes nothing but what the liveness
store already wrote (``last_seen``), so the change feed sees no row rewritten for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row

from ronin.discovery.descriptor import ServiceEntry
from ronin.discovery.http_probe import Fetched
from ronin.store.claims import CLAIM_KEY
from ronin.store.database import pooled_connection
from ronin.store.liveness import Pool
from ronin.store.models import Sighting, canonical_class
from ronin.store.queries import query
from ronin.store.services import ServiceMap

logger = logging.getLogger(__name__)

#: How a service first seen by a re-check (not by a job) was found.
VERIFY_METHOD = "verify"
#: The metadata keys a descriptor decides; the others (the finding job, first_seen, the
#: claim, the response time) are how the service was found, not what it is.
DESCRIPTOR_KEYS = ("protocols", "hieros_compliance", "descriptor_url")


@dataclass(frozen=True, slots=True)
class MapRow:
    """What the map holds for one service, as far as a descriptor can change it."""

    node_id: str
    node_class: str
    endpoint: str
    capabilities: tuple[str, ...]
    metadata: Mapping[str, Any]
    last_seen: datetime


def described(fetched: Fetched, service: ServiceEntry) -> tuple[Any, ...]:
    """The part of a service a descriptor decides, in the form the map stores it."""
    node = fetched.descriptor
    return (
        node.node_id,
        canonical_class(node.node_class),
        service.endpoint,
        tuple(dict.fromkeys(service.capabilities)),
        _descriptor_metadata(fetched, service),
    )


def held(row: MapRow) -> tuple[Any, ...]:
    """The same part of a map row."""
    metadata = {key: row.metadata[key] for key in DESCRIPTOR_KEYS if key in row.metadata}
    return (row.node_id, row.node_class, row.endpoint, row.capabilities, metadata)


def changed_sightings(
    fetched: Fetched, rows: Mapping[str, MapRow], seen_at: datetime
) -> list[Sighting]:
    """The sightings of the services of ``fetched`` the map holds otherwise (or not at all)."""
    found = []
    for service in fetched.descriptor.services:
        row = rows.get(service.service_id)
        if row is not None and held(row) == described(fetched, service):
            continue
        found.append(_sighting(fetched, service, row, seen_at))
    return found


class MapRefresh:
    """Upserts what answering nodes' descriptors changed; one read per batch of answers."""

    def __init__(self, pool: Pool, services: ServiceMap) -> None:
        self._pool = pool
        self._services = services
        self.written = 0
        """Services this refresh wrote since it was made."""

    async def __call__(self, answers: Sequence[Fetched], *, now: datetime | None = None) -> int:
        """Upsert the changed services of ``answers``; how many the map wrote."""
        ids = sorted({s.service_id for fetched in answers for s in fetched.descriptor.services})
        if not ids:
            return 0
        rows = await self._rows(ids)
        seen_at = now or datetime.now(UTC)
        sightings = [s for fetched in answers for s in changed_sightings(fetched, rows, seen_at)]
        if not sightings:
            return 0
        result = await self._services.upsert(sightings)
        written = len(result.inserted) + len(result.refreshed) + len(result.taken_over)
        if written:
            logger.info("re-checks changed %d services in the map", written)
        self.written += written
        return written

    async def _rows(self, service_ids: Iterable[str]) -> dict[str, MapRow]:
        async with pooled_connection(self._pool) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query("map_rows_of"), {"service_ids": list(service_ids)})
            return {
                row["service_id"]: MapRow(
                    node_id=row["node_id"],
                    node_class=row["node_class"],
                    endpoint=row["endpoint"],
                    capabilities=tuple(row["capabilities"] or ()),
                    metadata=row["discovery_metadata"] or {},
                    last_seen=row["last_seen"],
                )
                for row in await cur.fetchall()
            }


def _descriptor_metadata(fetched: Fetched, service: ServiceEntry) -> dict[str, Any]:
    """The metadata keys the descriptor sets (``DESCRIPTOR_KEYS``), as a crawl's sighting
    sets them."""
    metadata: dict[str, Any] = {
        "protocols": list(service.protocols),
        "descriptor_url": fetched.url,
    }
    hieros = fetched.descriptor.hieros_compliance
    if hieros is not None:
        metadata["hieros_compliance"] = hieros
    return metadata


def _sighting(
    fetched: Fetched, service: ServiceEntry, row: MapRow | None, seen_at: datetime
) -> Sighting:
    """A sighting of ``service``: the row's finding kept (same node), the descriptor's parts
    new; never older than the row, which the owner's sighting must not be."""
    node = fetched.descriptor
    same_node = row is not None and row.node_id == node.node_id
    kept = {
        key: value
        for key, value in (row.metadata.items() if row is not None and same_node else ())
        if key not in DESCRIPTOR_KEYS and key != CLAIM_KEY
    }
    kept.setdefault("discovery_method", VERIFY_METHOD)
    kept["response_time_ms"] = fetched.response_time_ms
    return Sighting(
        service_id=service.service_id,
        node_id=node.node_id,
        node_class=node.node_class,
        endpoint=service.endpoint,
        capabilities=service.capabilities,
        seen_at=max(seen_at, row.last_seen) if row is not None and same_node else seen_at,
        metadata={**kept, **_descriptor_metadata(fetched, service)},
    )

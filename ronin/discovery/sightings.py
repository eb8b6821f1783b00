"""The pure step of a crawl: a fetched descriptor becomes the sightings the map records and
the reasons its left-out entries are counted under. No I/O, so it is tested on its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ronin.discovery.crawl_state import Rank
from ronin.discovery.http_probe import Fetched
from ronin.store.models import Sighting


@dataclass(frozen=True, slots=True)
class Observed:
    """What one descriptor adds to a job: its sightings, and one failure reason per entry it
    left out (``skipped:<reason>``)."""

    sightings: tuple[Sighting, ...]
    skipped: tuple[str, ...]


def observe(
    fetched: Fetched,
    *,
    discovery_method: str,
    job_id: uuid.UUID,
    rank: Rank,
    seen_at: datetime,
) -> Observed:
    """The sightings of every service ``fetched`` announces, ranked in the job's probe order."""
    node = fetched.descriptor
    sightings = tuple(
        Sighting(
            service_id=service.service_id,
            node_id=node.node_id,
            node_class=node.node_class,
            endpoint=service.endpoint,
            capabilities=service.capabilities,
            seen_at=seen_at,
            metadata=_metadata(fetched, service.protocols, discovery_method, job_id),
            job_id=str(job_id),
            rank=rank,
        )
        for service in node.services
    )
    return Observed(sightings, tuple(f"skipped:{reason}" for _, reason in node.skipped))


def _metadata(
    fetched: Fetched, protocols: tuple[str, ...], discovery_method: str, job_id: uuid.UUID
) -> dict[str, Any]:
    """How the service was seen, kept beside it in the map."""
    metadata: dict[str, Any] = {
        "discovery_method": discovery_method,
        "response_time_ms": fetched.response_time_ms,
        "job_id": str(job_id),
        "protocols": list(protocols),
        "descriptor_url": fetched.url,
    }
    hieros = fetched.descriptor.hieros_compliance
    if hieros is not None:
        metadata["hieros_compliance"] = hieros
    return metadata

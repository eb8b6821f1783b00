"""What the crawl needs from the job it runs: the protocol ``discovery/`` owns.

The worker's ``JobContext`` satisfies it structurally, so discovery never imports ``jobs``
(layers run one way), and a test may hand the crawl a fake job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from ronin.discovery.params import JobParams
from ronin.store.models import Page, ServiceFilter, Sighting, UpsertResult


class KnownServices(Protocol):
    """The map as the crawl reads it: the services it already knows of a node."""

    async def find(
        self, where: ServiceFilter = ..., *, limit: int = ..., cursor: str | None = ...
    ) -> Page:
        """One page of the services matching ``where``."""
        ...


class DiscoveryJob(Protocol):
    """One attempt of one discovery job, as the crawl sees it."""

    @property
    def job_id(self) -> uuid.UUID:
        """The job's id (seeds the sweep's order, tags its sightings)."""
        ...

    @property
    def params(self) -> JobParams:
        """The job's parsed parameters."""
        ...

    @property
    def resume(self) -> Any:
        """What the previous attempt saved with its progress, or None."""
        ...

    @property
    def services(self) -> KnownServices:
        """The map, for the known services of a node."""
        ...

    async def progress(
        self, percent: int, message: str, *, resume: Any = None, force: bool = False
    ) -> None:
        """Report progress, saving ``resume`` for a later attempt."""
        ...

    def progress_due(self) -> bool:
        """Whether a progress report now would be written."""
        ...

    async def record(self, sightings: Iterable[Sighting]) -> UpsertResult:
        """Write sightings to the map, linked to the job."""
        ...

    async def record_links(self, links: Iterable[tuple[str, str]]) -> int:
        """Write peer links (referrer node_id, peer node_id), best effort."""
        ...

    def probe_failed(self, reason: str) -> None:
        """Count one failed probe under ``reason``."""
        ...

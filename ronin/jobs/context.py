"""What an executor sees of its job: params, resume state, and the lease-guarded ways to
report progress and record what it found."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ronin.discovery.params import JobParams
from ronin.store.job_models import ClaimedJob
from ronin.store.jobs import JobStore
from ronin.store.models import Sighting, UpsertResult
from ronin.store.services import ServiceMap

PROGRESS_INTERVAL_S = 0.5
MAX_REPORTED_CONFLICTS = 100
MAX_MESSAGE_CHARS = 500


class LeaseLost(Exception):
    """This worker no longer holds the job: stop at once and write nothing more."""


class JobContext:
    """One attempt of one job, as its executor sees it."""

    def __init__(
        self, job: ClaimedJob, params: JobParams, store: JobStore, services: ServiceMap
    ) -> None:
        self.job = job
        self.params = params
        self.services = services
        self._store = store
        checkpoint = job.checkpoint or {}
        #: What the previous attempt saved with its progress, for a resumed job to skip.
        self.resume: Any = checkpoint.get("resume")
        tally = checkpoint.get("tally", {})
        self.failures: Counter[str] = Counter(tally.get("failures", {}))
        self.conflicts: list[dict[str, Any]] = list(tally.get("conflicts", []))
        self.conflict_count: int = tally.get("conflict_count", 0)
        #: The (service_id, claimed_by) pairs counted: a node claiming one id twice in a job
        #: (two addresses, a repeated probe) is one conflict.
        self._conflicted = {(c["service_id"], c["claimed_by"]) for c in self.conflicts}
        self._progress = 0
        self._last_write = 0.0

    @property
    def job_id(self) -> uuid.UUID:
        return self.job.job_id

    async def progress(
        self, percent: int, message: str, *, resume: Any = None, force: bool = False
    ) -> None:
        """Report progress (0-100), at most every half second unless ``force``.

        ``resume`` is saved with it: a later attempt of this job finds it in ``self.resume``.
        """
        self._progress = max(0, min(100, int(percent)))
        if resume is not None:
            self.resume = resume
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        checkpoint = {"resume": self.resume, "tally": self._tally()}
        message = message[:MAX_MESSAGE_CHARS]
        if not await self._store.record_progress(self.job, self._progress, message, checkpoint):
            raise LeaseLost(str(self.job_id))

    def progress_due(self) -> bool:
        """Whether a progress report now would be written (not throttled away)."""
        return time.monotonic() - self._last_write >= PROGRESS_INTERVAL_S

    async def record(self, sightings: Iterable[Sighting]) -> UpsertResult:
        """Write sightings to the map and link them to this job; conflicts join the result.

        A row taken over within the job was linked when the job first wrote it (the link's
        first outcome stays), so it counts once. An outdated sighting (another job wrote a
        later one of the same owner first) is still a service this job found: refreshed.
        """
        result = await self.services.upsert(sightings)
        found = [(sid, "new") for sid in result.inserted]
        seen = result.refreshed + result.taken_over + result.outdated
        found += [(sid, "refreshed") for sid in seen]
        if found:
            ids, outcomes = zip(*found, strict=True)
            await self._store.link_services(self.job, ids, outcomes)
        for conflict in result.conflicts:
            if (conflict.service_id, conflict.claimed_by) in self._conflicted:
                continue
            self._conflicted.add((conflict.service_id, conflict.claimed_by))
            self.conflict_count += 1
            if len(self.conflicts) < MAX_REPORTED_CONFLICTS:
                self.conflicts.append(
                    {
                        "service_id": conflict.service_id,
                        "claimed_by": conflict.claimed_by,
                        "owner": conflict.owner,
                    }
                )
        return result

    def probe_failed(self, reason: str) -> None:
        """Count one failed probe under ``reason``."""
        self.failures[reason] += 1

    def _tally(self) -> dict[str, Any]:
        return {
            "failures": dict(self.failures),
            "conflicts": self.conflicts,
            "conflict_count": self.conflict_count,
        }

    def result(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        """The job's result: conflicts and failed probes by reason (the final write adds the
        counts of services found and refreshed)."""
        return {
            "conflicts": self.conflicts,
            "conflict_count": self.conflict_count,
            "failed_probes": dict(self.failures),
            **(extra or {}),
        }

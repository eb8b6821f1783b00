"""What an executor sees of its job: params, resume state, and the lease-guarded ways to
report progress and record what it found."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ronin.discovery.crawl_state import CrawlReport
from ronin.discovery.params import JobParams
from ronin.errors import DatabaseError
from ronin.jobs.queue_protocol import AttemptQueue, JobServices
from ronin.store.job_models import ClaimedJob, JobResult, ReportedConflict
from ronin.store.models import Sighting, UpsertResult

logger = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5
MAX_REPORTED_CONFLICTS = 100
MAX_MESSAGE_CHARS = 500


#: What an executor's attempt returns: a crawl's report, extra result fields of an executor
#: of its own, or nothing.
Outcome = CrawlReport | Mapping[str, Any] | None


class LeaseLost(Exception):
    """This worker no longer holds the job: stop at once and write nothing more."""


class JobContext:
    """One attempt of one job, as its executor sees it."""

    def __init__(
        self, job: ClaimedJob, params: JobParams, store: AttemptQueue, services: JobServices
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
        self.conflicts = [ReportedConflict.from_json(c) for c in tally.get("conflicts", [])]
        self.conflict_count: int = tally.get("conflict_count", 0)
        #: The (service_id, claimed_by) pairs counted: a node claiming one id twice in a job
        #: (two addresses, a repeated probe) is one conflict.
        self._conflicted = {(c.service_id, c.claimed_by) for c in self.conflicts}
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
                    ReportedConflict(conflict.service_id, conflict.claimed_by, conflict.owner)
                )
        return result

    async def record_links(self, links: Iterable[tuple[str, str]]) -> int:
        """Write peer links (referrer node_id, peer node_id) seen by this job, best effort:
        called after the services they join are written, and a failure here is logged and
        costs only these links, never the job or its services."""
        try:
            return await self.services.record_links(str(self.job_id), links)
        except DatabaseError as exc:
            logger.warning("job %s: peer links not recorded: %s", self.job_id, exc.message)
            return 0

    def probe_failed(self, reason: str) -> None:
        """Count one failed probe under ``reason``."""
        self.failures[reason] += 1

    def _tally(self) -> dict[str, Any]:
        """What the checkpoint keeps of the counts, for a re-claimed attempt to go on from."""
        return {
            "failures": dict(self.failures),
            "conflicts": [conflict.to_json() for conflict in self.conflicts],
            "conflict_count": self.conflict_count,
        }

    def result(self, outcome: Outcome) -> JobResult:
        """The job's result: conflicts, failed probes by reason and what the executor reported
        (the final write adds the counts of services found and refreshed)."""
        result = JobResult(
            conflicts=tuple(self.conflicts),
            conflict_count=self.conflict_count,
            failed_probes=dict(self.failures),
        )
        if isinstance(outcome, CrawlReport):
            return replace(result, stats=outcome.stats, mismatches=outcome.mismatches)
        return replace(result, extra=dict(outcome or {}))

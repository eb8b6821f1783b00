"""What the job queue holds: plain, immutable values."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ronin.store.models import Service

JobStatus = Literal["pending", "running", "completed", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = ("pending", "running", "completed", "failed")
FINISHED: tuple[JobStatus, ...] = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class Job:
    """A discovery job with its queue state."""

    job_id: uuid.UUID
    status: JobStatus
    params: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None
    attempts: int
    max_attempts: int
    run_after: datetime | None
    worker_id: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: int
    progress_message: str
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    idempotency_key: str | None
    schedule_id: uuid.UUID | None
    started_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def pending(
        cls, job_id: uuid.UUID, params: dict[str, Any], created_at: datetime, max_attempts: int
    ) -> Job:
        """A job just inserted without a key or a schedule, as reading it back would show it:
        its row's defaults (0003_job_engine.sql) written out, ``params`` in jsonb's key order,
        and ``created_at`` also its ``run_after`` and ``updated_at``."""
        return cls(
            job_id=job_id,
            status="pending",
            params=jsonb_ordered(params),
            created_at=created_at,
            completed_at=None,
            attempts=0,
            max_attempts=max_attempts,
            run_after=created_at,
            worker_id=None,
            lease_expires_at=None,
            cancel_requested=False,
            progress=0,
            progress_message="",
            error=None,
            result=None,
            idempotency_key=None,
            schedule_id=None,
            started_at=None,
            updated_at=created_at,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> JobResult:
        """The job's result, typed (empty counts for a job without one yet)."""
        return JobResult.from_json(self.result)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds a lease on; every write about it carries ``lease_token``."""

    job_id: uuid.UUID
    params: dict[str, Any]
    lease_token: uuid.UUID
    attempt: int
    max_attempts: int
    checkpoint: dict[str, Any] | None
    cancel_requested: bool
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claim of a job and how it ended."""

    attempt: int
    worker_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring discovery: one job per period."""

    schedule_id: uuid.UUID
    name: str
    params: dict[str, Any]
    interval_s: int
    next_run_at: datetime
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobPage:
    """One keyset page of jobs, newest first, and the cursor of the next."""

    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FoundService:
    """A service a job found: ``new`` to the map or ``refreshed``, as the map holds it now."""

    outcome: str
    service: Service


@dataclass(frozen=True, slots=True)
class FoundPage:
    """One keyset page of what a job found, and the cursor of the next."""

    items: list[FoundService]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ReportedConflict:
    """A service another node owns, claimed by a node the job reached (PROTOCOL.md 7)."""

    service_id: str
    claimed_by: str
    owner: str

    def to_json(self) -> dict[str, str]:
        return {"service_id": self.service_id, "claimed_by": self.claimed_by, "owner": self.owner}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportedConflict:
        return cls(str(data["service_id"]), str(data["claimed_by"]), str(data["owner"]))


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A node reached through a DID its descriptor does not claim (PROTOCOL.md 4)."""

    did: str
    node_id: str
    url: str

    def to_json(self) -> dict[str, str]:
        return {"did": self.did, "node_id": self.node_id, "url": self.url}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Mismatch:
        return cls(str(data["did"]), str(data["node_id"]), str(data["url"]))


@dataclass(frozen=True, slots=True)
class ServiceCounts:
    """The services a job found: new to the map, or refreshed (the final write counts them)."""

    new: int = 0
    refreshed: int = 0

    @property
    def total(self) -> int:
        return self.new + self.refreshed


#: The keys of a stored result that ``JobResult`` has fields for; any other is ``extra``.
RESULT_KEYS = frozenset(
    {"conflicts", "conflict_count", "failed_probes", "stats", "mismatches", "services"}
)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a job counted, as stored in ``result`` (PROTOCOL.md 4-5, the API and KLF).

    ``stats`` and ``mismatches`` are a discovery's (None: the executor reports none);
    ``services`` is written by the store's final write (None: not written yet); ``extra``
    holds the fields an executor of its own returns, stored beside the others.
    """

    conflicts: tuple[ReportedConflict, ...] = ()
    conflict_count: int = 0
    failed_probes: Mapping[str, int] = field(default_factory=dict)
    stats: Mapping[str, int] | None = None
    mismatches: tuple[Mismatch, ...] | None = None
    services: ServiceCounts | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def hosts_probed(self) -> int:
        return (self.stats or {}).get("hosts_probed", 0)

    @property
    def nodes(self) -> int:
        return (self.stats or {}).get("nodes", 0)

    @property
    def ports_closed(self) -> int:
        """Swept ports that did not open, whatever the reason (``closed_<reason>`` stats)."""
        return sum(n for key, n in (self.stats or {}).items() if key.startswith("closed_"))

    @property
    def found(self) -> ServiceCounts:
        """The services found, zero until the final write has counted them."""
        return self.services or ServiceCounts()

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object; an executor's own fields come last, as they always did."""
        data: dict[str, Any] = {
            "conflicts": [conflict.to_json() for conflict in self.conflicts],
            "conflict_count": self.conflict_count,
            "failed_probes": dict(self.failed_probes),
        }
        if self.stats is not None:
            data["stats"] = dict(self.stats)
        if self.mismatches is not None:
            data["mismatches"] = [mismatch.to_json() for mismatch in self.mismatches]
        if self.services is not None:
            data["services"] = {"new": self.services.new, "refreshed": self.services.refreshed}
        return data | dict(self.extra)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> JobResult:
        """A stored result (None: none yet); a key an older result lacks takes its default."""
        data = data or {}
        mismatches = data.get("mismatches")
        services = data.get("services")
        return cls(
            conflicts=tuple(ReportedConflict.from_json(c) for c in data.get("conflicts", [])),
            conflict_count=int(data.get("conflict_count", 0)),
            failed_probes=dict(data.get("failed_probes", {})),
            stats=None if data.get("stats") is None else dict(data["stats"]),
            mismatches=(
                None if mismatches is None else tuple(Mismatch.from_json(m) for m in mismatches)
            ),
            services=(
                None
                if services is None
                else ServiceCounts(int(services.get("new", 0)), int(services.get("refreshed", 0)))
            ),
            extra={key: value for key, value in data.items() if key not in RESULT_KEYS},
        )


def jsonb_ordered(value: Any) -> Any:
    """``value`` with every object's keys in the order jsonb stores them (shorter keys first,
    then by their UTF-8 bytes, which is code point order), as reading it back would give."""
    if isinstance(value, dict):
        ordered = {}
        for key in sorted(value, key=_jsonb_key_order):
            item = value[key]
            ordered[key] = jsonb_ordered(item) if isinstance(item, dict | list) else item
        return ordered
    if isinstance(value, list):
        for each in value:
            if isinstance(each, dict | list):
                return [jsonb_ordered(each) for each in value]
    return value  # (a scalar, or a list of scalars as job params' lists are, as it is)


def _jsonb_key_order(key: str) -> tuple[int, str]:
    """A key's length in bytes, then the key."""
    return (len(key), key) if key.isascii() else (len(key.encode()), key)

"""What the job queue holds: plain, immutable values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


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

"""Submitting a job: validate first, so an invalid job is refused and nothing is written."""

from __future__ import annotations

from typing import Any

from ronin.discovery.params import parse_params, with_defaults
from ronin.discovery.policy import ScopePolicy
from ronin.errors import InvalidValue
from ronin.store.job_models import Job, Schedule
from ronin.store.jobs import JobStore

MAX_IDEMPOTENCY_KEY_CHARS = 255


async def submit_job(
    store: JobStore,
    params: Any,
    *,
    max_attempts: int,
    idempotency_key: str | None = None,
    policy: ScopePolicy | None = None,
) -> tuple[Job, bool]:
    """Validate ``params`` (PROTOCOL.md section 5) and enqueue the job, stored verbatim.

    With a ``policy``, a network target outside it is refused (``FORBIDDEN_TARGET``) before
    anything is written; the job checks again before its first packet. Returns the job and
    whether it is new: a retried submission with the same idempotency
    key gets the first one's job back.
    """
    params = with_defaults(params)
    _check(params, policy)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidValue(
            f"an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="idempotency_key",
        )
    return await store.insert(params, max_attempts=max_attempts, idempotency_key=idempotency_key)


async def add_schedule(
    store: JobStore, name: str, params: Any, interval_s: int, *, policy: ScopePolicy | None = None
) -> Schedule:
    """Register a recurring discovery after validating its params like a job's."""
    params = with_defaults(params)
    _check(params, policy)
    if not name or len(name) > 100:
        raise InvalidValue("a schedule name has 1 to 100 characters", field="name")
    if interval_s < 60:
        raise InvalidValue("a schedule runs at most once a minute", field="interval")
    return await store.add_schedule(name, params, interval_s)


def _check(params: Any, policy: ScopePolicy | None) -> None:
    """Valid params (PROTOCOL.md section 5), and a network target inside ``policy``."""
    parsed = parse_params(params)
    if policy is not None and parsed.network is not None:
        policy.check_target(parsed.network)

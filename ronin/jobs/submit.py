"""Submitting a job: validate first, so an invalid job is refused and nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ronin.discovery.params import parse_params, with_defaults
from ronin.discovery.policy import ScopePolicy
from ronin.errors import InvalidValue, RoninError
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
    params = checked(params, idempotency_key, policy)
    return await store.insert(params, max_attempts=max_attempts, idempotency_key=idempotency_key)


def checked(params: Any, idempotency_key: Any, policy: ScopePolicy | None) -> dict[str, Any]:
    """``params`` as a job stores them (default protocols written in), after every check of a
    submission: the params (PROTOCOL.md section 5), the scope policy, the key's length."""
    params = with_defaults(params)
    _check(params, policy)
    if idempotency_key is not None and not (
        isinstance(idempotency_key, str) and 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS
    ):
        raise InvalidValue(
            f"an idempotency key is a string of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="idempotency_key",
        )
    return dict(params)


#: One job of a batch: the job and whether it is new, or why it was refused.
Outcome = tuple[Job, bool] | RoninError


async def submit_jobs(
    store: JobStore,
    items: Sequence[tuple[Any, str | None]],
    *,
    max_attempts: int,
    policy: ScopePolicy | None = None,
) -> list[Outcome]:
    """Validate each ``(params, idempotency_key)`` on its own, as ``submit_job`` does, and
    enqueue every valid one in one statement; an outcome per item, in order.

    A refused item changes nothing for the others. Keys behave as for one job; items of one
    batch that share a key get the first one's job.
    """
    outcomes: list[Outcome | None] = []
    valid: list[dict[str, Any]] = []
    keys: list[str | None] = []
    for params, key in items:
        try:
            valid.append(checked(params, key, policy))
        except RoninError as exc:
            outcomes.append(exc)
            continue
        keys.append(key)
        outcomes.append(None)
    stored = iter(await store.insert_many(valid, max_attempts=max_attempts, idempotency_keys=keys))
    return [outcome if outcome is not None else next(stored) for outcome in outcomes]


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

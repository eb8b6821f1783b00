"""The verifier as a node runs it (issue 12): built from the settings, with the probe's
session, the scope policy, the node's self-checks and the map refresh, run beside the job
worker and stopped by the same signals.

``ronin worker`` and ``ronin serve`` (with job slots) verify; ``ronin discover --wait`` does
not. ``RONIN_VERIFY_INTERVAL_S=0`` turns verification off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from functools import partial

import dns.asyncquery
import dns.message
import dns.rdatatype

from ronin.config import Settings
from ronin.discovery import dns_sd
from ronin.discovery.http_probe import fetch_descriptor, new_session, tls_context
from ronin.discovery.policy import ScopePolicy
from ronin.jobs.map_refresh import MapRefresh
from ronin.jobs.verifier import SelfCheck, Verifier, VerifierOptions
from ronin.store.database import Database
from ronin.store.liveness import LivenessStore, Timing
from ronin.store.services import ServiceMap

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
CONCURRENCY = 32
BATCH = 100
GUARD_MIN_SAMPLE = 10
#: The longest pause between looks for due nodes when none is due; at short intervals a
#: twentieth of the interval (a quarter of a retry's delay), so a retry is not kept waiting.
IDLE_S = 1.0
#: The resolver self-check's bound: one UDP question, well inside a fetch's timeout.
RESOLVER_CHECK_TIMEOUT_S = 2.0


def new_verifier_id() -> str:
    """hostname:pid:random, as a job worker's id, so an operator can tell who checked."""
    return f"verify:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def resolver_check(
    nameserver: tuple[str, int], *, timeout_s: float = RESOLVER_CHECK_TIMEOUT_S
) -> None:
    """Raises unless the configured DNS server (RONIN_DNS) answers a question at all.

    Any answer will do, an error code included: what the guard asks is whether Ronin can
    still reach its resolver, not whether some name exists.
    """
    question = dns.message.make_query(".", dns.rdatatype.NS)
    host, port = nameserver
    await dns.asyncquery.udp(question, host, port=port, timeout=timeout_s)


def verifier_options(settings: Settings, worker_id: str | None = None) -> VerifierOptions:
    """How this node's verifier works, from its settings."""
    return VerifierOptions(
        worker_id=worker_id or new_verifier_id(),
        guard_fraction=settings.verify_guard_fraction,
        guard_min_sample=GUARD_MIN_SAMPLE,
        batch=BATCH,
        concurrency=CONCURRENCY,
        fetch_timeout_s=FETCH_TIMEOUT_S,
        idle_s=min(IDLE_S, settings.verify_interval_s / 20),
        gone_retention=settings.gone_retention,
    )


@contextlib.asynccontextmanager
async def open_verifier(
    settings: Settings,
    database: Database,
    services: ServiceMap,
    policy: ScopePolicy,
    *,
    worker_id: str | None = None,
) -> AsyncIterator[Verifier | None]:
    """The node's verifier on ``database``, its probe session open while in the block; None
    when ``RONIN_VERIFY_INTERVAL_S`` is 0."""
    if settings.verify_interval_s == 0:
        yield None
        return
    store = LivenessStore(database.pool, Timing.of(timedelta(seconds=settings.verify_interval_s)))
    nameserver = dns_sd.parse_nameserver(settings.dns) if settings.dns else None
    checks: dict[str, SelfCheck] = {"database": store.ping}
    if nameserver is not None:
        checks["resolver"] = partial(resolver_check, nameserver)
    session = new_session(
        policy,
        concurrency=CONCURRENCY,
        total_timeout_s=FETCH_TIMEOUT_S,
        ssl_context=tls_context(settings.ca_bundle),
        dns=dns_sd.new_resolver(nameserver) if nameserver else None,
    )
    async with session:
        fetch = partial(fetch_descriptor, session, policy=policy, total_timeout_s=FETCH_TIMEOUT_S)
        yield Verifier(
            store,
            fetch,
            verifier_options(settings, worker_id),
            self_checks=checks,
            refresh=MapRefresh(database.pool, services),
        )


async def run_beside(work: Awaitable[None], verifier: Verifier | None, stop: asyncio.Event) -> None:
    """Run ``work`` (the job worker, until ``stop``) with ``verifier`` beside it.

    The verifier stops on the same ``stop``; once the work is done it has a fetch's timeout
    to finish its batch, then is cancelled (its leases lapse; another worker checks again).
    A verifier that crashes is logged and does not take the worker down.
    """
    if verifier is None:
        await work
        return
    logger.info(
        "verifying the map every %gs as %s",
        verifier.store.timing.interval.total_seconds(),
        verifier.options.worker_id,
    )
    verifying = asyncio.create_task(verifier.run(stop), name="verifier")
    verifying.add_done_callback(_log_crash)
    try:
        await work
    finally:
        stop.set()
        done, _ = await asyncio.wait({verifying}, timeout=verifier.options.fetch_timeout_s + 1)
        if not done:
            verifying.cancel()
            await asyncio.gather(verifying, return_exceptions=True)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("the verifier stopped: %s", exc, exc_info=exc)

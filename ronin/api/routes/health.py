"""``/healthz``, ``/readyz`` and ``/metrics``: for load balancers and Prometheus, no token."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ronin import metrics
from ronin.api.state import NodeState, node
from ronin.api.wire import error_responses
from ronin.errors import DatabaseError
from ronin.store.job_models import JOB_STATUSES
from ronin.store.migrate import ensure_current

router = APIRouter(tags=["health"])
Node = Annotated[NodeState, Depends(node)]
READY_TIMEOUT_S = 5.0
_OK = b'{"status":"ok"}'


@router.get("/healthz", responses={200: {"description": "The process is up."}})
async def healthz() -> Response:
    """The process answers; says nothing about the database."""
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    responses={200: {"description": "Ready to serve."}, **error_responses(503)},
)
async def readyz(state: Node) -> Response:
    """The database answers and its schema is the one this Ronin expects."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), state.database.pool.connection() as conn:
            await ensure_current(conn)
    except TimeoutError:
        raise DatabaseError(f"the database did not answer within {READY_TIMEOUT_S}s") from None
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(f"the database is not reachable: {exc}") from exc
    return Response(_OK, media_type="application/json")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        **error_responses(503),
    },
)
async def prometheus_metrics(state: Node) -> Response:
    """Jobs by status, services in the map and by state (read now from the database), and
    changes written by type (the same, from the database), and this process's claim latency,
    probes by outcome and reason, probe latency, liveness counters and change streams."""
    counts = await state.jobs.count_by_status()
    for status in JOB_STATUSES:
        metrics.JOBS.labels(status).set(counts.get(status, 0))
    by_state = await state.services.counts_by_state()
    for service_state, count in by_state.items():
        metrics.SERVICES_BY_STATE.labels(service_state).set(count)
    metrics.SERVICES.set(sum(by_state.values()))
    for change_type, total in (await state.node.changes.totals()).items():
        metrics.CHANGES_WRITTEN.labels(change_type).set(total)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

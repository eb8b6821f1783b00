"""``/v1/jobs``: submit, read, list, cancel, results and live events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from ronin.api.auth import require_read, require_write
from ronin.api.limits import MAX_BATCH_JOBS
from ronin.api.routes.body import json_body
from ronin.api.state import NodeState, node
from ronin.api.wire import (
    ATTEMPTS,
    BATCH_ITEM_SCHEMA,
    JOB,
    JOB_PAGE,
    JOB_PARAMS_SCHEMA,
    JOB_RESULTS,
    BatchAnswer,
    JobResults,
    error_responses,
    json_response,
)
from ronin.errors import BatchRefused, EmptyBatch, InvalidValue, RoninError, TooManyJobs
from ronin.jobs import klf
from ronin.jobs.follow import follow_job
from ronin.jobs.submit import Outcome
from ronin.store.job_models import Attempt, Job, JobPage, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_read)])
Node = Annotated[NodeState, Depends(node)]
SSE_PING_S = 15

#: One Server-Sent Event of a job's stream: its data is a KLF message, as JSON.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": [klf.TASK_PROGRESS, klf.TASK_RESPONSE]},
        "data": {"type": "string", "description": "A KLF message (type, from, to, payload)."},
        "id": {"type": "string"},
    },
}
#: ``{"jobs": [...]}``: up to 1,000 jobs, each its params or ``{"params", "idempotency_key"}``.
BATCH_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["jobs"],
    "additionalProperties": False,
    "properties": {
        "jobs": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_JOBS,
            "items": BATCH_ITEM_SCHEMA,
        }
    },
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="A retried submission with the same key gets the first one's job.",
    ),
]


@router.post(
    "",
    status_code=202,
    response_model=Job,
    dependencies=[Depends(require_write)],
    responses=error_responses(400, 401, 403, 413, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JOB_PARAMS_SCHEMA}},
        }
    },
)
async def submit(request: Request, state: Node, idempotency_key: IdempotencyKey = None) -> Response:
    """Queue a discovery job; the answer is the job, pending."""
    params = await json_body(request)
    await state.admission.admit(1)
    job, new = await state.node.submit(params, idempotency_key=idempotency_key)
    headers = {"Location": f"/v1/jobs/{job.job_id}"}
    if new:
        state.admission.queued(1)
    else:
        headers["Idempotent-Replayed"] = "true"
    return json_response(JOB, job, status=202, headers=headers)


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchAnswer,
    dependencies=[Depends(require_write)],
    responses={
        **error_responses(400, 401, 403, 413, 429, 503),
        422: {
            "description": "BATCH_REFUSED: no job was accepted (the answer lists each one's "
            'error, with `error` set); or INVALID_VALUE: the body is not `{"jobs": [...]}`.',
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/BatchAnswer"},
                            {"$ref": "#/components/schemas/ErrorBody"},
                        ]
                    }
                }
            },
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BATCH_REQUEST_SCHEMA}},
        }
    },
)
async def submit_batch(
    request: Request, state: Node, idempotency_key: IdempotencyKey = None
) -> Response:
    """Queue up to 1,000 discovery jobs in one request (and one statement). Each job is
    checked on its own: the answer lists, in request order, each one's job or its error."""
    if idempotency_key is not None:
        raise InvalidValue(
            "a batch takes an idempotency key per job (each item's idempotency_key), "
            "not one for the request",
            field="Idempotency-Key",
        )
    items = _batch_items(await json_body(request))
    await state.admission.admit(len(items))
    refused = {index: item for index, item in enumerate(items) if isinstance(item, RoninError)}
    valid = [item for item in items if not isinstance(item, RoninError)]
    stored = iter(await state.node.submit_many(valid))
    outcomes = [refused.get(index) or next(stored) for index in range(len(items))]
    return _batch_answer(state, outcomes)


def _batch_items(body: Any) -> list[tuple[Any, Any] | RoninError]:
    """Each job of a batch as ``(params, idempotency_key)``, or the error that refuses it."""
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
        raise InvalidValue('a batch is an object {"jobs": [...]}', field="jobs")
    unknown = sorted(str(key) for key in body if key != "jobs")
    if unknown:
        raise InvalidValue(f"unknown field {unknown[0]!r}", field=unknown[0])
    jobs: list[Any] = body["jobs"]
    if not jobs:
        raise EmptyBatch("a batch has at least one job", field="jobs")
    if len(jobs) > MAX_BATCH_JOBS:
        raise TooManyJobs(
            f"a batch has at most {MAX_BATCH_JOBS:,} jobs, not {len(jobs):,}", field="jobs"
        )
    return [_batch_item(item) for item in jobs]


def _batch_item(item: Any) -> tuple[Any, Any] | RoninError:
    if not (isinstance(item, dict) and "params" in item):
        return item, None  # params alone
    unknown = sorted(str(key) for key in item if key not in ("params", "idempotency_key"))
    if unknown:
        return InvalidValue(f"unknown field {unknown[0]!r}", field=unknown[0])
    return item["params"], item.get("idempotency_key")


def _batch_answer(state: NodeState, outcomes: list[Outcome]) -> Response:
    """The answer, written as bytes: each job serialised once, as GET shows it."""
    parts: list[bytes] = []
    created = replayed = refused = 0
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, RoninError):
            refused += 1
            parts.append(orjson.dumps({"index": index, "error": outcome.as_dict()}))
            continue
        job, new = outcome
        created += new
        replayed += not new
        flag = b"false" if new else b"true"
        parts.append(b'{"index":%d,"replayed":%s,"job":%s}' % (index, flag, JOB.dump_json(job)))
    state.admission.queued(created)
    head = b'{"created":%d,"replayed":%d,"refused":%d,' % (created, replayed, refused)
    status = 202
    if created + replayed == 0:
        error = BatchRefused(f"none of the {refused:,} jobs was accepted: each says why")
        head += b'"error":%s,' % orjson.dumps(error.as_dict())
        status = error.http_status
    body = head + b'"jobs":[' + b",".join(parts) + b"]}"
    return Response(body, status_code=status, media_type="application/json")


@router.get("", response_model=JobPage, responses=error_responses(400, 401, 422, 503))
async def list_jobs(
    state: Node,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Jobs, newest first, a page at a time."""
    page = await state.jobs.list_jobs(status=status, limit=limit, cursor=cursor)
    return json_response(JOB_PAGE, page)


@router.get("/{job_id}", response_model=Job, responses=error_responses(401, 404, 422, 503))
async def get_job(job_id: uuid.UUID, state: Node) -> Response:
    """One job with its queue state."""
    return json_response(JOB, await state.jobs.get(job_id))


@router.delete(
    "/{job_id}",
    status_code=202,
    response_model=Job,
    dependencies=[Depends(require_write)],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def cancel_job(job_id: uuid.UUID, state: Node) -> Response:
    """Cancel a job: a pending one fails with CANCELLED now, a running one is told to stop."""
    await state.jobs.cancel(job_id)
    return json_response(JOB, await state.jobs.get(job_id), status=202)


@router.get(
    "/{job_id}/results",
    response_model=JobResults,
    responses=error_responses(400, 401, 404, 422, 503),
)
async def job_results(
    job_id: uuid.UUID,
    state: Node,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """What a job found (new or refreshed services, as the map holds them now), a page at a
    time, with its result: counts, conflicts and failed probes by reason."""
    job = await state.jobs.get(job_id)
    page = await state.jobs.found_services(job_id, limit=limit, cursor=cursor)
    results = JobResults(
        job_id=str(job.job_id),
        status=job.status,
        result=job.result,
        items=page.items,
        next_cursor=page.next_cursor,
    )
    return json_response(JOB_RESULTS, results)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "KLF TASK_PROGRESS messages as the job runs, then its "
            "TASK_RESPONSE; each event's data is one KLF message.",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        },
        **error_responses(401, 404, 422, 503),
    },
)
async def job_events(
    job_id: uuid.UUID,
    state: Node,
    recipient: Annotated[
        str | None,
        Query(
            alias="for",
            max_length=255,
            pattern=r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$",
            description="The DID the KLF messages are addressed to (default: this node's).",
        ),
    ] = None,
) -> EventSourceResponse:
    """Server-Sent Events: the job's progress live, then its final message, then the end.
    A finished job answers with its final message at once."""
    await state.jobs.get(job_id)  # a 404 before the stream starts
    return EventSourceResponse(
        _events(state, job_id, recipient or state.settings.node_id), ping=SSE_PING_S
    )


async def _events(state: NodeState, job_id: uuid.UUID, recipient: str) -> AsyncIterator[Any]:
    sender = state.settings.node_id
    sequence = 0
    async for job in follow_job(state.jobs, job_id, state.events, stop=state.closing):
        if job.finished:
            found = await state.jobs.found_services(job_id, limit=klf.MAX_SERVICES_IN_RESPONSE)
            payload = klf.response_payload(job, found.items, job.summary().found.total)
            kind = klf.TASK_RESPONSE
        elif job.status == "running":
            payload, kind = klf.progress_payload(job), klf.TASK_PROGRESS
        else:
            continue
        sequence += 1
        message = klf.envelope(kind, sender, recipient, payload)
        yield ServerSentEvent(data=orjson.dumps(message).decode(), event=kind, id=str(sequence))


@router.get(
    "/{job_id}/attempts",
    response_model=list[Attempt],
    responses=error_responses(401, 404, 422, 503),
)
async def job_attempts(job_id: uuid.UUID, state: Node) -> Response:
    """Every attempt of a job: which worker, when, and how it ended."""
    await state.jobs.get(job_id)
    return json_response(ATTEMPTS, await state.jobs.attempts(job_id))

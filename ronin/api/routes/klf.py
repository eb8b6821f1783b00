"""``POST /v1/klf``: KLF messages from other kOS nodes.

A ``TASK_REQUEST`` for ``run_discovery_job`` queues the job and is answered ``202`` with a
``TASK_PROGRESS`` naming the job and its event stream. Anything else is refused with the
one error shape, which here is also a KLF ``TASK_RESPONSE`` with status ``failed``, so the
sender's KLF layer and its HTTP layer both understand the refusal.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import TypeAdapter, ValidationError

from ronin.api.auth import require_write
from ronin.api.routes.body import json_body
from ronin.api.state import NodeState, node
from ronin.api.wire import DID, KlfAnswer, KlfEnvelope, error_responses
from ronin.errors import InvalidValue, QueueFull, RoninError, UnsupportedMessage
from ronin.jobs import klf

router = APIRouter(tags=["klf"], dependencies=[Depends(require_write)])
Node = Annotated[NodeState, Depends(node)]
_ENVELOPE = TypeAdapter(KlfEnvelope)


@router.post(
    "/v1/klf",
    status_code=202,
    response_model=KlfAnswer,
    responses={
        **error_responses(400, 401, 403, 413, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ENVELOPE.json_schema(by_alias=True)}},
        }
    },
)
async def receive_message(
    request: Request,
    state: Node,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> Response:
    """Take one KLF message; only a ``run_discovery_job`` TASK_REQUEST is acted on."""
    body = await json_body(request)
    sender = body.get("from") if isinstance(body, dict) else None
    valid_sender = isinstance(sender, str) and len(sender) <= 255 and DID.fullmatch(sender)
    reply_to: str = str(sender) if valid_sender else state.settings.node_id
    try:
        message = _parse(body)
        reply_to = message.sender
        params = _task_params(message)
        await state.admission.admit(1)
        job, new = await state.node.submit(params, idempotency_key=idempotency_key)
        state.admission.queued(int(new))
    except RoninError as exc:
        if exc.http_status >= 500:
            raise
        return _refusal(state, reply_to, exc)
    events = f"/v1/jobs/{job.job_id}/events?for={quote(reply_to, safe=':')}"
    payload = {
        **klf.progress_payload(job, message=f"queued as job {job.job_id}"),
        "job_url": f"/v1/jobs/{job.job_id}",
        "events_url": events,
    }
    answer = klf.envelope(klf.TASK_PROGRESS, state.settings.node_id, reply_to, payload)
    headers = {"Location": f"/v1/jobs/{job.job_id}"}
    return Response(orjson.dumps(answer), 202, headers, media_type="application/json")


def _parse(body: Any) -> KlfEnvelope:
    try:
        return _ENVELOPE.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidValue(f"not a KLF message: {field}: {first['msg']}", field=field) from None


def _task_params(message: KlfEnvelope) -> Any:
    if message.type != klf.TASK_REQUEST:
        raise UnsupportedMessage(
            f"this node acts on {klf.TASK_REQUEST} messages only, not {message.type!r}",
            field="type",
        )
    task = message.payload.get("task_name")
    if task != klf.RUN_DISCOVERY_JOB:
        raise UnsupportedMessage(
            f"this node runs the task {klf.RUN_DISCOVERY_JOB!r} only, not {task!r}",
            field="payload.task_name",
        )
    if "params" not in message.payload:
        raise InvalidValue("a run_discovery_job request carries params", field="payload.params")
    return message.payload["params"]


def _refusal(state: NodeState, recipient: str, exc: RoninError) -> Response:
    error = exc.as_dict()
    payload = {"task_name": klf.RUN_DISCOVERY_JOB, "status": "failed", "error": error}
    answer = klf.envelope(klf.TASK_RESPONSE, state.settings.node_id, recipient, payload)
    body = {**answer, "error": error}
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    return Response(orjson.dumps(body), exc.http_status, headers, media_type="application/json")

"""What the API sends and accepts: the store's own dataclasses as JSON, the error shape, and
the few request bodies. One ``TypeAdapter`` per type, so a response is serialised once, in
Rust, without FastAPI validating it again; the remote CLI reads answers with the same ones."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ronin.discovery import params as job_params
from ronin.store.job_models import Attempt, FoundService, Job, JobPage, Schedule
from ronin.store.liveness_rules import State
from ronin.store.models import NodePage, Page, Service

if TYPE_CHECKING:
    from fastapi import Response

T = TypeVar("T")

#: Job params as the OpenAPI document describes them, wherever the API takes them.
JOB_PARAMS_SCHEMA = job_params.json_schema()
#: The payload of a KLF message; the one this node acts on is a run_discovery_job request.
KLF_PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "For a TASK_REQUEST: the task_name run_discovery_job and the job's params.",
    "properties": {
        "task_name": {"type": "string", "examples": ["run_discovery_job"]},
        "params": JOB_PARAMS_SCHEMA,
    },
}
#: One job of a batch submission: its params, or its params with an idempotency key.
BATCH_ITEM_SCHEMA: dict[str, Any] = {
    "oneOf": [
        JOB_PARAMS_SCHEMA,
        {
            "type": "object",
            "required": ["params"],
            "additionalProperties": False,
            "properties": {
                "params": JOB_PARAMS_SCHEMA,
                "idempotency_key": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 255,
                    "description": "A retried submission with the same key gets the first "
                    "one's job; items of one batch sharing a key get the first one's.",
                },
            },
        },
    ]
}
DID_PATTERN = r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$"
DID = re.compile(DID_PATTERN)
MAX_DID_CHARS = 255


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, upper-case error code.")
    message: str = Field(description="What went wrong, for a person.")
    field: str | None = Field(default=None, description="The input at fault, if one is.")
    cursor: str | None = Field(
        default=None, description="On CURSOR_EXPIRED: the current cursor, to resume from."
    )


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


class JobResults(BaseModel):
    """A finished (or running) job's result and a page of the services it found."""

    job_id: str
    status: str
    result: dict[str, Any] | None
    items: list[FoundService]
    next_cursor: str | None


class BatchItem(BaseModel):
    """One job of a batch submission, at its index in the request: its job, or why it was
    refused."""

    index: int = Field(description="Its position in the request's jobs, from 0.")
    job: Job | None = Field(
        default=None, description="The job, as GET /v1/jobs/{job_id} shows it (if accepted)."
    )
    replayed: bool | None = Field(
        default=None,
        description="True when the job is an earlier one with the same idempotency key.",
    )
    error: ErrorDetail | None = Field(
        default=None, description="Why the job was refused: the error one submission gets."
    )


class BatchAnswer(BaseModel):
    """What a batch submission did with each job, in request order."""

    created: int = Field(description="Jobs queued by this request.")
    replayed: int = Field(description="Items answered with an earlier job (idempotency key).")
    refused: int = Field(description="Items refused, each with its error.")
    jobs: list[BatchItem]
    error: ErrorDetail | None = Field(
        default=None, description="Only when no job was accepted: BATCH_REFUSED (a 422)."
    )


class ChangeRecord(BaseModel):
    """One change to the map (PROTOCOL.md section 9)."""

    model_config = ConfigDict(populate_by_name=True)

    cursor: str = Field(description="Opaque; cursors sort in the order the changes committed.")
    type: Literal["service_added", "service_changed", "service_state", "service_removed"]
    at: datetime
    service_id: str
    node_id: str
    from_: State | None = Field(default=None, alias="from", description="service_state only.")
    to: State | None = Field(default=None, description="service_state only.")
    service: Service = Field(description="The service as GET /v1/services shows it.")


class ChangePageBody(BaseModel):
    """A page of the change feed: read on from ``cursor`` while ``more``."""

    changes: list[ChangeRecord]
    cursor: str
    more: bool


class GraphNode(BaseModel):
    """A node as the graph draws it."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(description="The node_id (a DID).")
    class_: str = Field(alias="class", description="Its latest service's node class.")
    state: State = Field(
        description="The best of its services' states: alive > suspect > unverified > gone."
    )
    services: int
    capabilities: list[str] = Field(description="Every capability of its services, sorted.")
    x: float = Field(description="Its stored position, placed once when it first appeared.")
    y: float


class GraphLink(BaseModel):
    """A peer link: ``source``'s descriptor named ``target`` as a peer."""

    source: str
    target: str
    first_seen: datetime
    last_seen: datetime
    job_id: str | None = Field(description="The last job that saw it.")


class GraphSummary(BaseModel):
    nodes: int
    links: int
    by_state: dict[str, int]
    by_class: dict[str, int]


class GraphBody(BaseModel):
    """The map as a graph, consistent with the change feed at ``cursor``."""

    cursor: str = Field(description="Follow /v1/changes/stream?since=cursor from here.")
    summary: GraphSummary
    nodes: list[GraphNode]
    links: list[GraphLink] = Field(description="The links between the nodes returned.")


class GraphNodesBody(BaseModel):
    """The nodes asked for that are in the map, and the links with an end among them."""

    nodes: list[GraphNode]
    links: list[GraphLink]


class NodeLinkBody(BaseModel):
    """One link of a node: the node at its other end."""

    node_id: str
    first_seen: datetime
    last_seen: datetime
    job_id: str | None


class StateChangeBody(BaseModel):
    """A state change of one of the node's services (a service_state change of the feed)."""

    model_config = ConfigDict(populate_by_name=True)

    cursor: str
    at: datetime
    service_id: str
    from_: State | None = Field(alias="from")
    to: State | None


class NodeDetail(BaseModel):
    """One node: its services, its peer links both ways, its services' state history."""

    model_config = ConfigDict(populate_by_name=True)

    node_id: str
    class_: str = Field(alias="class")
    state: State
    services: list[Service]
    referred_by: list[NodeLinkBody]
    refers_to: list[NodeLinkBody]
    history: list[StateChangeBody] = Field(description="Newest first, at most 100.")


class KlfEnvelope(BaseModel):
    """A KLF message (PROTOCOL.md section 5)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: str = Field(min_length=1, max_length=64)
    sender: str = Field(alias="from", min_length=1, max_length=MAX_DID_CHARS, pattern=DID_PATTERN)
    to: str = Field(min_length=1, max_length=MAX_DID_CHARS, pattern=DID_PATTERN)
    payload: dict[str, Any] = Field(json_schema_extra=KLF_PAYLOAD_SCHEMA)


class KlfAnswer(BaseModel):
    """A KLF message this node sends back; an ``error`` when it refused the message."""

    model_config = ConfigDict(populate_by_name=True)

    type: str
    sender: str = Field(alias="from")
    to: str
    payload: dict[str, Any]
    error: ErrorDetail | None = None


class ScheduleRequest(BaseModel):
    """A recurring discovery: a name, job params and a period."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(json_schema_extra=JOB_PARAMS_SCHEMA)
    interval_s: int = Field(ge=60, le=366 * 86400)


JOB = TypeAdapter(Job)
JOB_PAGE = TypeAdapter(JobPage)
SERVICE = TypeAdapter(Service)
SERVICE_PAGE = TypeAdapter(Page)
NODE_PAGE = TypeAdapter(NodePage)
JOB_RESULTS = TypeAdapter(JobResults)
ATTEMPTS = TypeAdapter(list[Attempt])
SCHEDULE = TypeAdapter(Schedule)
SCHEDULES = TypeAdapter(list[Schedule])


def json_response(
    adapter: TypeAdapter[T], value: T, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``value`` as a JSON answer."""
    from fastapi import Response  # here, so the remote CLI reads answers without FastAPI

    return Response(
        adapter.dump_json(value),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    return {status: {"model": ErrorBody, "description": _REASONS[status]} for status in statuses}


_REASONS = {
    400: "Malformed input: bad JSON, an invalid cursor, an empty batch (EMPTY_BATCH).",
    401: "No token, or an unknown one.",
    403: "A read-only token on a write route, or a target outside the scope policy. "
    "A refused KLF message also carries the KLF TASK_RESPONSE that refuses it.",
    404: "No such job, service, node or schedule.",
    409: "The job already ended.",
    410: "CURSOR_EXPIRED: the cursor is older than the changes kept; `cursor` is the current one.",
    413: "The request body is too large (PAYLOAD_TOO_LARGE), or a batch has more jobs than "
    "one request may carry (TOO_MANY_JOBS).",
    429: "QUEUE_FULL: more jobs are pending than the node accepts; Retry-After (seconds) says "
    "when to try again.",
    422: "A value breaks a rule; `field` names it. A refused KLF message also carries the "
    "KLF TASK_RESPONSE (status failed) that refuses it.",
    503: "The database cannot be reached.",
}

"""``/v1/services`` and ``/v1/nodes``: the map, by capability, class, node and freshness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ronin.api.auth import require_read
from ronin.api.state import NodeState, node
from ronin.api.wire import NODE_PAGE, SERVICE, SERVICE_PAGE, error_responses, json_response
from ronin.durations import parse_duration
from ronin.errors import InvalidValue, NotFound
from ronin.store.liveness_rules import STATES
from ronin.store.models import NodePage, Page, Service, ServiceFilter, checked_states
from ronin.store.storable import check_text

router = APIRouter(tags=["map"], dependencies=[Depends(require_read)])
Node = Annotated[NodeState, Depends(node)]
MAX_CAPABILITIES_ASKED = 32
Capabilities = Annotated[
    list[str],
    Query(
        max_length=MAX_CAPABILITIES_ASKED,
        description="Repeatable; a service must hold every one (all-of).",
    ),
]
AnyCapabilities = Annotated[
    list[str],
    Query(
        max_length=MAX_CAPABILITIES_ASKED,
        description="Repeatable; a service must hold at least one (any-of).",
    ),
]
States = Annotated[
    list[str],
    Query(
        max_length=len(STATES),
        description="Repeatable; the service is in one of these states (alive, suspect, gone, "
        "unverified). Without it, every state but gone.",
        json_schema_extra={"items": {"type": "string", "enum": list(STATES)}},
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=512, description="The next page's cursor.")]


@router.get("/v1/services", response_model=Page, responses=error_responses(400, 401, 422, 503))
async def find_services(
    state: Node,
    capability: Capabilities = [],  # noqa: B006 (FastAPI copies defaults)
    any_capability: AnyCapabilities = [],  # noqa: B006
    node_class: Annotated[str | None, Query(max_length=100)] = None,
    node_id: Annotated[str | None, Query(max_length=255)] = None,
    seen_since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="An ISO 8601 time with its offset, or a duration such as 15m or 24h "
            "(seen within it).",
        ),
    ] = None,
    service_state: Annotated[States, Query(alias="state")] = [],  # noqa: B006
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Services matching every filter given, in ``service_id`` order, a page at a time; gone
    ones only when a ``state`` asks for them."""
    where = ServiceFilter(
        all_capabilities=tuple(capability),
        any_capabilities=tuple(any_capability),
        node_class=node_class,
        node_id=node_id,
        seen_since=parse_since(seen_since) if seen_since else None,
        states=checked_states(service_state),
    )
    page = await state.services.find(where, limit=limit, cursor=cursor)
    return json_response(SERVICE_PAGE, page)


@router.get(
    "/v1/services/{service_id}",
    response_model=Service,
    responses=error_responses(401, 404, 422, 503),
)
async def get_service(service_id: str, state: Node) -> Response:
    """One service of the map."""
    check_text(service_id, "service_id")
    service = await state.services.get(service_id) if len(service_id) <= 255 else None
    if service is None:
        raise NotFound(f"no service {service_id}", field="service_id")
    return json_response(SERVICE, service)


@router.get("/v1/nodes", response_model=NodePage, responses=error_responses(400, 401, 422, 503))
async def list_nodes(
    state: Node,
    node_class: Annotated[str | None, Query(max_length=100)] = None,
    service_state: Annotated[States, Query(alias="state")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Cursor = None,
) -> Response:
    """Nodes in ``node_id`` order, each with its services in the states asked for (every state
    but gone without ``state``); a node with none of those is left out."""
    page = await state.services.nodes(
        node_class=node_class, states=service_state, limit=limit, cursor=cursor
    )
    return json_response(NODE_PAGE, page)


def parse_since(text: str) -> datetime:
    """An ISO 8601 time with an offset, or a duration back from now."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text, field="seen_since")
        except (InvalidValue, OverflowError):
            raise InvalidValue(
                "seen_since is an ISO 8601 time with its offset or a duration such as 24h",
                field="seen_since",
            ) from None
    if moment.tzinfo is None:
        raise InvalidValue("seen_since needs a UTC offset (e.g. Z or +00:00)", field="seen_since")
    return moment

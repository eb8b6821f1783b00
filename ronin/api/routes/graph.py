"""``/v1/graph`` and ``/v1/nodes/{node_id}``: the map as nodes and peer links, for the dashboard.

The graph is read in one snapshot with the change feed's cursor (``ronin.store.links``), so a
page draws it and then follows ``/v1/changes/stream?since=cursor``. Answers are encoded with
orjson: a graph of 10,000 nodes is a few megabytes, and no validation pass is spent on it.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response
from pydantic import TypeAdapter

from ronin.api.auth import require_read
from ronin.api.routes.services import MAX_CAPABILITIES_ASKED
from ronin.api.state import NodeState, node
from ronin.api.wire import GraphBody, GraphNodesBody, NodeDetail, error_responses
from ronin.errors import NotFound
from ronin.store.links import MAX_IDS, STATE_ORDER, GraphFilter
from ronin.store.liveness_rules import STATES
from ronin.store.models import Service, ServiceFilter, checked_states
from ronin.store.services import MAX_PAGE_SIZE
from ronin.store.storable import check_text

router = APIRouter(tags=["graph"], dependencies=[Depends(require_read)])
Node = Annotated[NodeState, Depends(node)]
GraphStates = Annotated[
    list[str],
    Query(
        alias="state",
        max_length=len(STATES),
        description="Repeatable; the node's state (the best of its services') is one of these. "
        "Without it, every state (gone nodes included).",
        json_schema_extra={"items": {"type": "string", "enum": list(STATES)}},
    ),
]
Capabilities = Annotated[
    list[str],
    Query(
        max_length=MAX_CAPABILITIES_ASKED,
        description="Repeatable; the node's services hold every one between them (all-of).",
    ),
]
Ids = Annotated[
    list[str],
    Query(max_length=MAX_IDS, description=f"Repeatable node ids, at most {MAX_IDS}."),
]


@router.get("/v1/graph", response_model=GraphBody, responses=error_responses(401, 422, 503))
async def graph(
    state: Node,
    node_class: Annotated[str | None, Query(max_length=100)] = None,
    node_state: GraphStates = [],  # noqa: B006 (FastAPI copies defaults)
    capability: Capabilities = [],  # noqa: B006
) -> Response:
    """Every node of the map (filtered) with its stored position, the peer links between
    them, and the change-feed cursor the snapshot is consistent with."""
    where = GraphFilter(node_class, checked_states(node_state), tuple(capability))
    body = await state.services.links.graph(where)
    return _json(body)


@router.get(
    "/v1/graph/nodes", response_model=GraphNodesBody, responses=error_responses(401, 422, 503)
)
async def graph_nodes(state: Node, ids: Ids = []) -> Response:  # noqa: B006
    """The nodes named that are in the map, as the graph shows them (a new one is placed),
    and the links with an end among them."""
    for node_id in ids:
        check_text(node_id, "ids")
    nodes, links = await state.services.links.nodes([i for i in ids if len(i) <= 255])
    return _json({"nodes": nodes, "links": links})


@router.get(
    "/v1/nodes/{node_id:path}",
    response_model=NodeDetail,
    responses=error_responses(401, 404, 422, 503),
)
async def node_detail(node_id: str, state: Node) -> Response:
    """One node: its services (every state), who named it as a peer and whom it named, and
    its services' state changes, newest first."""
    check_text(node_id, "node_id")
    services: list[Service] = []
    if len(node_id) <= 255:
        page = await state.services.find(
            ServiceFilter(node_id=node_id, states=STATES), limit=MAX_PAGE_SIZE
        )
        services = page.items
    if not services:
        raise NotFound(f"no node {node_id}", field="node_id")
    links = await state.services.links.of_node(node_id)
    latest = max(services, key=lambda s: (s.last_seen, s.service_id))
    best = min(STATE_ORDER.index(s.state) for s in services)
    return _json(
        {
            "node_id": node_id,
            "class": latest.node_class,
            "state": STATE_ORDER[best],
            "services": _services_adapter().dump_python(services, mode="json"),
            "referred_by": [end.to_json() for end in links.referred_by],
            "refers_to": [end.to_json() for end in links.refers_to],
            "history": [change.to_json() for change in links.history],
        }
    )


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@cache
def _services_adapter() -> TypeAdapter[list[Service]]:
    return TypeAdapter(list[Service])

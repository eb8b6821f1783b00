"""``/.well-known/kos-node``: this Ronin as a kOS node (PROTOCOL.md section 2), so that other
nodes, and other Ronins, can discover it like any other. No token: a descriptor is public."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from ronin.api.state import NodeState, node
from ronin.discovery.descriptor import DESCRIPTOR_PATH, base_url
from ronin.errors import NotFound

router = APIRouter(tags=["kOS"])
Node = Annotated[NodeState, Depends(node)]
NODE_CLASS = "Ronin"
CAPABILITIES = ("kos_discovery", "service_map_query")
PROTOCOLS = ("klf/1.0", "http/1.1")


@router.get(
    DESCRIPTOR_PATH,
    responses={200: {"description": "This node's kOS descriptor (PROTOCOL.md section 2)."}},
)
async def own_descriptor(request: Request, state: Node) -> Response:
    """The node's descriptor: one service, its KLF endpoint at the address this request
    reached (the listening socket's, never the Host header, which the client chooses)."""
    return Response(orjson.dumps(describe(state, own_url(request))), media_type="application/json")


def own_url(request: Request) -> str:
    """``http://address:port`` of the socket the request arrived on, under the app's root path."""
    server = request.scope.get("server")
    if not server:  # a Unix socket: no address to give
        raise NotFound("this node listens on no TCP address to describe", field="path")
    host, port = server
    return base_url(str(host), port or 80) + str(request.scope.get("root_path", ""))


def describe(state: NodeState, base_url: str) -> dict[str, Any]:
    """A descriptor in exactly PROTOCOL.md section 2's shape; the peers are RONIN_PEERS."""
    node_id = state.settings.node_id
    return {
        "kos": "1.0",
        "node_id": node_id,
        "node_class": NODE_CLASS,
        "services": [
            {
                "service_id": f"did:kos:service:{node_id.rsplit(':', 1)[-1]}:klf",
                "endpoint": f"{base_url}/v1/klf"[:2048],
                "capabilities": list(CAPABILITIES),
                "protocols": list(PROTOCOLS),
            }
        ],
        "peers": [peer.url for peer in state.settings.peers],
    }

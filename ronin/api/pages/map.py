"""``/services`` (the map, with its filters, a keyset page at a time) and ``/nodes/{id}``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ronin.api.pages.render import render
from ronin.api.pages.session import PageRefused, PageSession, require_session
from ronin.api.routes.services import parse_since
from ronin.api.state import NodeState, node
from ronin.errors import InvalidValue
from ronin.store.links import STATE_ORDER, NodeLinks
from ronin.store.liveness_rules import STATES
from ronin.store.models import Service, ServiceFilter, checked_states

router = APIRouter(include_in_schema=False)
Node = Annotated[NodeState, Depends(node)]
Session = Annotated[PageSession, Depends(require_session)]
PAGE_SIZE = 50
#: The most services a node's page lists (a node has a handful).
NODE_SERVICES = 1000
Many = Annotated[list[str], Query(max_length=32)]
Text = Annotated[str, Query(max_length=255)]
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True, slots=True)
class ServiceQuery:
    """The services page's filters as the form sent them (text fields may list several
    capabilities, separated by commas or spaces)."""

    capability: list[str] = field(default_factory=list)
    any_capability: list[str] = field(default_factory=list)
    node_class: str = ""
    node_id: str = ""
    state: list[str] = field(default_factory=list)
    seen_since: str = ""

    def filter(self) -> ServiceFilter:
        return ServiceFilter(
            all_capabilities=tuple(self.capability),
            any_capabilities=tuple(self.any_capability),
            node_class=self.node_class or None,
            node_id=self.node_id or None,
            seen_since=parse_since(self.seen_since) if self.seen_since else None,
            states=checked_states(self.state),
        )

    def params(self) -> list[tuple[str, str]]:
        """The query string of this search (for the next page's link)."""
        pairs: list[tuple[str, str]] = []
        if self.capability:
            pairs.append(("capability", " ".join(self.capability)))
        if self.any_capability:
            pairs.append(("any_capability", " ".join(self.any_capability)))
        for name in ("node_class", "node_id", "seen_since"):
            if getattr(self, name):
                pairs.append((name, getattr(self, name)))
        pairs += [("state", state) for state in self.state]
        return pairs


def _words(values: list[str]) -> list[str]:
    return list(
        dict.fromkeys(word for value in values for word in _SEPARATORS.split(value) if word)
    )


@router.get("/services")
async def services(
    request: Request,
    state: Node,
    session: Session,
    capability: Many = [],  # noqa: B006 (FastAPI copies defaults)
    any_capability: Many = [],  # noqa: B006
    node_class: Text = "",
    node_id: Text = "",
    service_state: Annotated[list[str], Query(alias="state", max_length=len(STATES))] = [],  # noqa: B006
    seen_since: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """A page of the map: every filter of GET /v1/services, as a form."""
    asked = ServiceQuery(
        capability=_words(capability),
        any_capability=_words(any_capability),
        node_class=node_class.strip(),
        node_id=node_id.strip(),
        state=[s for s in service_state if s],
        seen_since=seen_since.strip(),
    )
    context: dict[str, Any] = {"asked": asked, "states": STATES, "items": [], "next": None}
    try:
        page = await state.services.find(asked.filter(), limit=PAGE_SIZE, cursor=cursor or None)
    except InvalidValue as exc:
        return render(request, "services.html", status=422, error=exc.message, **context)
    context["items"] = page.items
    if page.next_cursor:
        context["next"] = [*asked.params(), ("cursor", page.next_cursor)]
    return render(request, "services.html", error=None, **context)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What a node's page shows (what GET /v1/nodes/{node_id} answers)."""

    node_id: str
    node_class: str
    state: str
    services: list[Service]
    links: NodeLinks


async def load_node(state: NodeState, node_id: str) -> NodeView | None:
    """A node of the map with its services in every state, its links both ways and its
    state history; None if no service has that node id."""
    where = ServiceFilter(node_id=node_id, states=STATES)
    page = await state.services.find(where, limit=NODE_SERVICES)
    if not page.items:
        return None
    latest = max(page.items, key=lambda s: (s.last_seen, s.service_id))
    best = min(STATE_ORDER.index(s.state) for s in page.items)
    return NodeView(
        node_id=node_id,
        node_class=latest.node_class,
        state=STATE_ORDER[best],
        services=page.items,
        links=await state.services.links.of_node(node_id),
    )


@router.get("/nodes/{node_id:path}")
async def node_page(request: Request, node_id: str, state: Node, session: Session) -> Response:
    """One node: its services, its state history, who referred it and whom it refers to."""
    if not 1 <= len(node_id) <= 255:
        raise PageRefused(404, "No such node", "a node id has 1 to 255 characters")
    cursor = await state.node.changes.current()  # before the node: the page misses nothing
    try:
        view = await load_node(state, node_id)
    except InvalidValue as exc:
        raise PageRefused(404, "No such node", exc.message) from None
    if view is None:
        raise PageRefused(404, "No such node", f"no service of the map has node id {node_id}")
    return render(request, "node.html", node=view, cursor=cursor)

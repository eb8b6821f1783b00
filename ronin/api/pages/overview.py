"""``/`` (the overview) and ``/network`` (the picture of the network)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from ronin.api.pages.render import render
from ronin.api.pages.session import PageSession, require_session
from ronin.api.state import NodeState, node
from ronin.errors import CursorExpired
from ronin.store.changes import Change, format_cursor, parse_cursor
from ronin.store.liveness_rules import STATES

router = APIRouter(include_in_schema=False)
Node = Annotated[NodeState, Depends(node)]
Session = Annotated[PageSession, Depends(require_session)]
LAST_CHANGES = 20
RUNNING_JOBS = 20
RECENT_JOBS = 10


@router.get("/")
async def overview(request: Request, state: Node, session: Session) -> Response:
    """What the map holds by state and class, the jobs running and recent, the last changes."""
    cursor = await state.node.changes.current()
    summary = await state.services.summary()
    running = await state.jobs.list_jobs(status="running", limit=RUNNING_JOBS)
    recent = await state.jobs.list_jobs(limit=RECENT_JOBS)
    graph = await state.services.links.graph()  # the nodes' states: the best of their services'
    return render(
        request,
        "overview.html",
        summary=summary,
        node_states=graph["summary"]["by_state"],
        states=STATES,
        running=running.items,
        recent=recent.items,
        changes=await last_changes(state, cursor, LAST_CHANGES),
        cursor=cursor,
    )


@router.get("/network")
async def network(request: Request, state: Node, session: Session) -> Response:
    """The picture (drawn by the page's script from /v1/graph) and its text summary."""
    summary = await state.services.summary()
    return render(request, "network.html", summary=summary, states=STATES)


async def last_changes(state: NodeState, cursor: str, count: int) -> list[Change]:
    """The last ``count`` changes up to ``cursor``, newest first (fewer if the feed has
    pruned older ones)."""
    head = parse_cursor(cursor)
    since = format_cursor(max(0, head - count))
    try:
        page = await state.node.changes.page(since, limit=count)
    except CursorExpired:
        return []
    return list(reversed(page.changes))

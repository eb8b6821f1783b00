"""``ronin services``: query the map by capability, class, node, freshness and state."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from ronin.cli import views
from ronin.cli.backend import open_backend
from ronin.cli.common import app, as_json, console, run
from ronin.cli.views import WHEN_WIDTH, folded, wrapped
from ronin.config import Settings
from ronin.durations import parse_duration
from ronin.store.liveness_rules import STATES
from ronin.store.models import Page, ServiceFilter, checked_states

#: The liveness states, as the choices of ``--state``.
ServiceState = StrEnum("ServiceState", {state: state for state in STATES})  # type: ignore[misc]


@app.command()
def services(
    capability: Annotated[
        list[str] | None, typer.Option(help="Holds this capability (repeatable: all of them).")
    ] = None,
    any_capability: Annotated[
        list[str] | None, typer.Option(help="Holds at least one of these (repeatable).")
    ] = None,
    node_class: Annotated[str | None, typer.Option("--class", help="Node class.")] = None,
    node: Annotated[str | None, typer.Option(help="Node id (a DID).")] = None,
    seen_within: Annotated[
        str | None, typer.Option(help="Seen within this long (15m, 24h, 7d).")
    ] = None,
    state: Annotated[
        list[ServiceState] | None,
        typer.Option(
            help="In this liveness state (repeatable: any of them). Without it, every state "
            "but gone."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Services per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List services of the map matching every filter given, in service_id order."""

    async def work(settings: Settings) -> Page:
        since = (
            datetime.now(UTC) - parse_duration(seen_within, field="--seen-within")
            if seen_within
            else None
        )
        where = ServiceFilter(
            all_capabilities=tuple(capability or ()),
            any_capabilities=tuple(any_capability or ()),
            node_class=node_class,
            node_id=node,
            seen_since=since,
            states=checked_states([one.value for one in state or ()]),
        )
        async with open_backend(settings) as backend:
            return await backend.services(where, limit, cursor)

    page = run(work)
    if json_output or not console.is_terminal:
        print(as_json({"items": page.items, "next_cursor": page.next_cursor}))
        return
    table = views.table(
        folded("service"),
        folded("node"),
        wrapped("class"),
        wrapped("state"),
        folded("endpoint"),
        wrapped("capabilities"),
        wrapped("last seen", min_width=WHEN_WIDTH),
    )
    for service in page.items:
        table.add_row(
            service.service_id,
            service.node_id,
            service.node_class,
            service.state,
            service.endpoint,
            ", ".join(service.capabilities),
            service.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")
    elif not page.items:
        console.print("no service matches")

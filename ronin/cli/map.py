"""``ronin map``: what the map holds, and forgetting what went stale."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from ronin.cli.common import console, map_app, run, service_map
from ronin.config import Settings
from ronin.durations import parse_duration
from ronin.store.database import open_database


@map_app.command("summary")
def map_summary(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print what the map holds: services and nodes by class, and services by state."""

    async def work(settings: Settings) -> dict[str, Any]:
        async with await open_database(settings) as database:
            summary = await service_map(database, settings).summary()
        return {
            "services": summary.services,
            "nodes": summary.nodes,
            "states": dict(summary.states),
            "classes": [
                {
                    "node_class": c.node_class,
                    "services": c.services,
                    "nodes": c.nodes,
                    "last_seen": c.last_seen.isoformat(),
                }
                for c in summary.classes
            ],
        }

    summary = run(work)
    if as_json or not console.is_terminal:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"The map: {summary['services']} services on {summary['nodes']} nodes")
    for column in ("node class", "services", "nodes", "last seen"):
        table.add_column(column, justify="right" if column in ("services", "nodes") else "left")
    for row in summary["classes"]:
        last_seen = datetime.fromisoformat(row["last_seen"]).strftime("%Y-%m-%d %H:%M:%S %Z")
        table.add_row(row["node_class"], str(row["services"]), str(row["nodes"]), last_seen)
    console.print(table)
    if not summary["classes"]:
        console.print("The map is empty: no discovery has found a service yet.")
        return
    console.print(_states_table(summary["states"]))


def _states_table(states: dict[str, int]) -> Table:
    """Services by liveness state; gone ones are hidden from map queries by default."""
    table = Table(title="By state (gone: hidden unless asked for, e.g. --state gone)")
    table.add_column("state")
    table.add_column("services", justify="right")
    for state, count in states.items():
        table.add_row(state, str(count))
    return table


@map_app.command("prune")
def map_prune(
    not_seen_for: Annotated[
        str, typer.Option(help="Forget services not seen for this long (90s, 15m, 12h, 7d).")
    ] = "7d",
) -> None:
    """Forget services that have not been seen for a while."""

    async def work(settings: Settings) -> int:
        window = parse_duration(not_seen_for, field="--not-seen-for")
        async with await open_database(settings) as database:
            return await service_map(database, settings).prune(not_seen_for=window)

    console.print(f"pruned {run(work)} services")

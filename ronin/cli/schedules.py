"""``ronin schedules``: recurring discoveries, one job per period."""

from __future__ import annotations

from typing import Annotated

import typer

from ronin.cli import views
from ronin.cli.backend import open_backend
from ronin.cli.common import as_json, console, run, schedules_app
from ronin.cli.discover import target_params
from ronin.cli.job_options import Concurrency, Depth, MdnsWindow, Ports, Protocols, Rate
from ronin.cli.views import WHEN_WIDTH, folded, whole, wrapped
from ronin.config import Settings
from ronin.discovery.param_fields import DEFAULT_DEPTH
from ronin.durations import parse_duration
from ronin.store.job_models import Schedule


@schedules_app.command("add")
def schedules_add(
    name: Annotated[str, typer.Argument(help="A name for the schedule.")],
    target: Annotated[str, typer.Argument(help="A network, a domain or a DID.")],
    every: Annotated[str, typer.Option(help="The period: 1h, 12h, 7d (at least 1m).")] = "1h",
    depth: Depth = DEFAULT_DEPTH,
    port: Ports = None,
    protocol: Protocols = None,
    rate: Rate = None,
    concurrency: Concurrency = None,
    mdns_window: MdnsWindow = None,
) -> None:
    """Discover TARGET every period, the first time now (workers create the jobs)."""

    async def work(settings: Settings) -> Schedule:
        interval = parse_duration(every, field="--every")
        params = target_params(
            target,
            depth=depth,
            ports=port or [],
            protocols=protocol or [],
            rate=rate,
            concurrency=concurrency,
            mdns_window_s=mdns_window,
        )
        async with open_backend(settings) as backend:
            return await backend.add_schedule(name, params, round(interval.total_seconds()))

    schedule = run(work)
    console.print(
        f"schedule {schedule.name} ({schedule.schedule_id}): every {schedule.interval_s}s, "
        f"next at {schedule.next_run_at:%Y-%m-%d %H:%M:%S %Z}",
        highlight=False,
    )


@schedules_app.command("list")
def schedules_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the schedules."""

    async def work(settings: Settings) -> list[Schedule]:
        async with open_backend(settings) as backend:
            return await backend.schedules()

    schedules = run(work)
    if json_output or not console.is_terminal:
        print(as_json(schedules))
        return
    if not schedules:
        console.print("no schedules")
        return
    table = views.table(
        wrapped("name"),
        folded("target"),
        wrapped("every"),
        wrapped("next run", min_width=WHEN_WIDTH),
        whole("id"),
    )
    for schedule in schedules:
        target = schedule.params.get("target", {})
        table.add_row(
            schedule.name,
            str(target.get("value", "")),
            f"{schedule.interval_s}s",
            schedule.next_run_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(schedule.schedule_id),
        )
    console.print(table)


@schedules_app.command("remove")
def schedules_remove(
    name_or_id: Annotated[str, typer.Argument(help="The schedule's name or id.")],
) -> None:
    """Remove a schedule; the jobs it created stay."""

    async def work(settings: Settings) -> None:
        async with open_backend(settings) as backend:
            await backend.remove_schedule(name_or_id)

    run(work)
    console.print(f"removed schedule {name_or_id}")

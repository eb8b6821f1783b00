"""The ``ronin`` command: Typer commands over the store, with Rich output on a terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ronin import __version__
from ronin.config import Settings
from ronin.durations import parse_duration
from ronin.errors import RoninError
from ronin.jobs.executor import load_executor, no_discovery
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.database import Database, connect, open_database, resolve_conninfo
from ronin.store.jobs import JobStore
from ronin.store.migrate import FIX_COMMAND, load_migrations, migrate, schema_status
from ronin.store.services import ServiceMap

app = typer.Typer(
    help="Ronin: the scout of a kOS network. Discovers kOS nodes and keeps a map of services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations and schema status.", no_args_is_help=True)
map_app = typer.Typer(help="The map of discovered services.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(map_app, name="map")

console = Console()
error_console = Console(stderr=True)
T = TypeVar("T")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what Ronin does.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one command's coroutine; a Ronin error becomes a one-line message and exit 1."""
    try:
        settings = Settings.from_env()
        return asyncio.run(work(settings))
    except RoninError as exc:
        error_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def version() -> None:
    """Print Ronin's version."""
    console.print(__version__)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to run from several machines at once)."""

    async def work(settings: Settings) -> list[str]:
        async with await connect(resolve_conninfo(settings)) as conn:
            return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]

    applied = _run(work)
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    else:
        console.print("schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """Show which migrations the database has and which it lacks."""

    async def work(settings: Settings) -> tuple[tuple[int, ...], tuple[int, ...]]:
        async with await connect(resolve_conninfo(settings)) as conn:
            status = await schema_status(conn)
        return status.applied, status.pending

    applied, pending = _run(work)
    for migration in load_migrations():
        state = "applied" if migration.version in applied else "pending"
        console.print(f"{migration.version:04d}_{migration.name}: {state}")
    if pending:
        console.print(f"run `{FIX_COMMAND}` to apply the pending migrations")


@map_app.command("summary")
def map_summary(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print what the map holds: services and nodes by class."""

    async def work(settings: Settings) -> dict[str, Any]:
        async with await open_database(settings) as database:
            summary = await _map(database, settings).summary()
        return {
            "services": summary.services,
            "nodes": summary.nodes,
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

    summary = _run(work)
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
            return await _map(database, settings).prune(not_seen_for=window)

    console.print(f"pruned {_run(work)} services")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Jobs run at once.")] = 4,
    executor: Annotated[
        str | None, typer.Option(hidden=True, help="module:attribute of a test executor.")
    ] = None,
) -> None:
    """Run jobs from the shared queue until SIGTERM/SIGINT (a second one skips the grace)."""

    async def work(settings: Settings) -> None:
        run_job = load_executor(executor) if executor else no_discovery
        async with await open_database(settings) as database:
            runner = Worker(
                conninfo=database.conninfo,
                store=JobStore(database.pool),
                services=_map(database, settings),
                executor=run_job,
                options=WorkerOptions.from_settings(settings, concurrency),
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal() -> None:
                if stop.is_set():
                    runner.hurry()
                stop.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, on_signal)
            error_console.print(f"worker {runner.worker_id}: {concurrency} slots", highlight=False)
            await runner.run(stop)

    _run(work)


def _map(database: Database, settings: Settings) -> ServiceMap:
    return ServiceMap(database.pool, freshness_window=settings.freshness_window)


def main() -> None:
    """Entry point of the ``ronin`` console command."""
    app()

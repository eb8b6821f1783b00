"""What every command shares: the Typer apps, the consoles, and how a command runs.

Each command's module is imported only when that command runs (``CommandLoader``), so
``ronin map summary`` loads neither the API nor the discovery stack.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.main import get_group

from ronin import __version__
from ronin.cli.help import RoninGroup, RoninTyper
from ronin.errors import DatabaseUnreachable, RoninError

if TYPE_CHECKING:
    from typer import _click as click

    from ronin.config import Settings
    from ronin.store.database import Database
    from ronin.store.services import ServiceMap

#: The module that registers each ``ronin`` command or group, in the order help lists them.
COMMAND_MODULES = {
    "version": __name__,
    "beacon": "ronin.cli.beacon",
    "discover": "ronin.cli.discover",
    "serve": "ronin.cli.serve",
    "services": "ronin.cli.services",
    "watch": "ronin.cli.watch",
    "worker": "ronin.cli.worker",
    "db": "ronin.cli.db",
    "schedules": "ronin.cli.schedules",
    "map": "ronin.cli.map",
    "jobs": "ronin.cli.jobs",
}


def load_commands(*names: str) -> None:
    """Import the modules registering the commands named (all of them if none is named)."""
    for name in names or tuple(COMMAND_MODULES):
        importlib.import_module(COMMAND_MODULES[name])


class CommandLoader(RoninGroup):
    """The ``ronin`` group: a command's module is imported when that command is looked up.

    Listing the commands (``ronin --help``, completion) or a name that is none of them (so
    that Click can suggest the nearest) imports them all: every listing stays as it was.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMAND_MODULES:
            self._load(cmd_name)
        else:
            self._load(*COMMAND_MODULES)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load(*COMMAND_MODULES)
        names = super().list_commands(ctx)
        known = [name for name in COMMAND_MODULES if name in names]
        return known + [name for name in names if name not in COMMAND_MODULES]

    def _load(self, *names: str) -> None:
        """Import what registers ``names`` and rebuild the commands, once per name."""
        if not self._loaded.issuperset(names):
            load_commands(*names)
            self.commands = get_group(app).commands
            self._loaded.update(names)


app = RoninTyper(
    cls=CommandLoader,
    help="Ronin: the scout of a kOS network. Discovers kOS nodes and keeps a map of services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = RoninTyper(help="The database: migrations and schema status.", no_args_is_help=True)
map_app = RoninTyper(help="The map of discovered services.", no_args_is_help=True)
jobs_app = RoninTyper(help="Discovery jobs: list, show, cancel, follow.", no_args_is_help=True)
schedules_app = RoninTyper(help="Recurring discoveries: add, list, remove.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(schedules_app, name="schedules")
app.add_typer(map_app, name="map")
app.add_typer(jobs_app, name="jobs")

console = Console()
error_console = Console(stderr=True)
#: Set by ``ronin.cli.main``: this is the ``ronin`` process, not a test's runner.
FREEZE_WHAT_LOADED = False
T = TypeVar("T")


def _print_version(value: bool) -> None:
    """``ronin --version``: the version, and nothing else."""
    if value:
        console.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what Ronin does.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print Ronin's version."
        ),
    ] = False,
) -> None:
    modules_loaded()  # Click looked the command up, importing its module, before this runs
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def modules_loaded() -> None:
    """In the ``ronin`` process: exclude what it has loaded, which lives until it exits, from
    the collector's walks (``gc.freeze``), and turn the collector back on, which ``main`` kept
    off while the modules loaded. Not in a test's runner, where what is frozen stays."""
    if FREEZE_WHAT_LOADED:
        gc.freeze()
        gc.enable()


@app.command()
def version() -> None:
    """Print Ronin's version."""
    console.print(__version__)


def run(
    work: Callable[[Settings], Coroutine[Any, Any, T]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run one command's coroutine; a Ronin error becomes a one-line message and exit 1."""
    # Settings and the store load psycopg: imported when a command runs, not for --version.
    from ronin.config import Settings
    from ronin.store.embedded import exit_cleanly_on_signals

    try:
        settings = Settings.from_env()
    except RoninError as exc:
        fail(exc)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(work(settings))
    except DatabaseUnreachable as exc:
        fail(exc.naming("RONIN_DATABASE_URL") if settings.database_url else exc)
    except RoninError as exc:
        fail(exc)
    finally:
        # A command's own SIGTERM handler went with its loop; the embedded server's release
        # must still run if a signal comes now.
        exit_cleanly_on_signals()


def fail(exc: RoninError) -> NoReturn:
    """Print ``error: message`` and leave with exit code 1."""
    error_console.print(
        f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(1) from None


def as_json(value: Any) -> str:
    """A dataclass (or anything JSON-like) as indented JSON; times in ISO 8601."""

    def default(item: Any) -> Any:
        if is_dataclass(item) and not isinstance(item, type):
            return asdict(item)
        return item.isoformat() if isinstance(item, datetime) else str(item)

    return json.dumps(value, default=default, indent=2)


def service_map(database: Database, settings: Settings) -> ServiceMap:
    """The map on ``database`` as this node configures it (``ronin.node.service_map``)."""
    from ronin.node import service_map as build

    return build(database, settings)

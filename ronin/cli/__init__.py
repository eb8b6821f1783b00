"""The ``ronin`` command: Typer commands over the store, the queue and discovery.

One module per command group; each registers its commands on the shared apps of
``ronin.cli.common`` when imported. ``ronin`` imports only the module of the command it runs
(see ``COMMAND_MODULES``); ``ronin.cli.app`` is the whole tree, every module imported.

This package itself imports nothing: the console script's ``from ronin.cli import main`` is
also what each ``spawn`` child (the sweep processes) re-runs, and those need neither Typer
nor Rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ronin.cli.help import RoninTyper


def main() -> None:
    """Entry point of the ``ronin`` console command."""
    import gc
    import sys

    gc.disable()  # loading modules makes no garbage worth a collection (modules_loaded)
    from ronin.cli.head_start import start_database_early

    start_database_early(sys.argv[1:])
    from ronin.cli import common

    common.FREEZE_WHAT_LOADED = True
    try:
        common.app()
    finally:
        # What the command made lives until the exit: the collector need not walk it there
        # (60 ms after a discovery of a /16) nor in the handlers that still run.
        gc.freeze()


def __getattr__(name: str) -> RoninTyper:
    """``ronin.cli.app``: the ``ronin`` app with every command registered."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ronin.cli import common

    common.load_commands()
    return common.app

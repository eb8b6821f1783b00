"""The ``ronin`` command: Typer commands over the store, the queue and discovery.

One module per command group; each registers its commands on the shared apps of
``ronin.cli.common`` when imported. ``ronin`` imports only the module of the command it runs
(see ``COMMAND_MODULES``); ``ronin.cli.app`` is the whole tree, every module imported.
"""

from __future__ import annotations

from ronin.cli import common
from ronin.cli.help import RoninTyper


def main() -> None:
    """Entry point of the ``ronin`` console command."""
    common.app()


def __getattr__(name: str) -> RoninTyper:
    """``ronin.cli.app``: the ``ronin`` app with every command registered."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    common.load_commands()
    return common.app

"""The ``ronin`` command: Typer commands over the store, the queue and discovery.

One module per command group; each registers its commands on the shared apps of
``ronin.cli.common`` when imported here.
"""

from ronin.cli import beacon, db, discover, jobs, map, serve, worker  # noqa: F401  (registers commands)
from ronin.cli.common import app


def main() -> None:
    """Entry point of the ``ronin`` console command."""
    app()

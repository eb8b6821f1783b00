"""The ``ronin`` command: Typer commands over the store, the queue and discovery.

One module per command group; each registers its commands on the shared apps of
``ronin.cli.common`` when imported here.
"""

from ronin.cli import (  # noqa: F401  (registers commands)
    beacon,
    db,
    discover,
    jobs,
    map,
    schedules,
    serve,
    services,
    worker,
)
from ronin.cli.common import app


def main() -> None:
    """Entry point of the ``ronin`` console command."""
    app()

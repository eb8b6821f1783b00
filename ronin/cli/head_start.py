"""Start the embedded PostgreSQL while a command loads, not after.

A command that opens the local database used to import Typer, Rich and its own stack
(0.1 to 0.3 s), then start the server and wait for it (another 0.1 s). Here the server
starts in a thread first (``ronin.store.embedded.start_embedded_soon``), and the command's
imports run while PostgreSQL boots on the other core; the command's first database call
waits for that start, and raises its error if it failed.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The commands that open the local database unless RONIN_URL names a remote node.
DATABASE_COMMANDS = frozenset(
    {"discover", "serve", "services", "watch", "worker", "db", "schedules", "map", "jobs"}
)
HELP_OPTIONS = frozenset({"--help", "--version"})


def start_database_early(args: Sequence[str]) -> None:
    """Start the embedded server now if the command in ``args`` (argv without the program)
    will open it: a database command, not asking for help, on no remote or external
    database. Anything unusual (bad settings) is left for the command to report."""
    words = [arg for arg in args if not arg.startswith("-")]
    if not words or words[0] not in DATABASE_COMMANDS or HELP_OPTIONS.intersection(args):
        return
    from ronin.config import Settings
    from ronin.errors import RoninError

    try:
        settings = Settings.from_env()
    except RoninError:
        return
    if not settings.embedded or settings.remote_url:
        return
    from ronin.store.embedded import start_embedded_soon

    start_embedded_soon(settings.data_dir)

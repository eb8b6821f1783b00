"""Running Python in a fresh interpreter that imports this checkout's Ronin, as ``ronin``
does: for what a command imports, and what state it leaves the process in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).parents[2]
#: Runs ``ronin ARGS`` through ``ronin.cli.main``; a probe's own lines follow it.
MAIN = """
import sys
from ronin.cli import main
sys.argv = ["ronin", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
"""


def fresh_python(
    code: str, args: Sequence[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` with this checkout first on the path; its output, as text."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_ronin(args: Sequence[str], then: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``ronin ARGS`` through ``main`` in a fresh interpreter, then the lines ``then``."""
    return fresh_python(MAIN + then, args, **env)

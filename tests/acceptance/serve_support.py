"""``ronin serve`` and ``ronin beacon`` as real processes, for tests that talk to them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
_LISTENING = re.compile(r"listening on (http://\S+)")
_BEACON = re.compile(r"beacon (\S+) serving (http://[^/\s]+)")


@dataclass
class Process:
    """A running ``ronin`` process, the URL it announced and its log."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path
    node_id: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for its exit code (killed if it does not stop)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"did not stop within {STOP_TIMEOUT_S}s:\n{self.log()}") from None


def environment(**env: str) -> dict[str, str]:
    """This environment without RONIN_*/PG* settings, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RONIN_", "PG"))}
    return clean | env


@contextmanager
def ronin_process(
    log_path: Path, pattern: re.Pattern[str], *args: str, **env: str
) -> Iterator[Process]:
    """Start ``ronin ARGS``, wait for ``pattern`` in its output; stop it on the way out."""
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "ronin", *args],
            env=environment(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process = Process(popen, "", log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (match := pattern.search(process.log())) is None:
            if popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ronin {' '.join(args)} did not start:\n{process.log()}")
            time.sleep(0.05)
        process.url = match[match.lastindex or 0]
        if pattern is _BEACON:
            process.node_id = match[1]
        yield process
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


@contextmanager
def served_node(tmp_path: Path, db_url: str, *args: str, **env: str) -> Iterator[Process]:
    """``ronin serve --port 0 ARGS`` on ``db_url``."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    with ronin_process(
        log, _LISTENING, "serve", "--port", "0", *args, RONIN_DATABASE_URL=db_url, **env
    ) as node:
        yield node


@contextmanager
def beacon(tmp_path: Path, host: str) -> Iterator[Process]:
    """``ronin beacon`` on ``host``, a free port; ``url`` is its base URL."""
    log = tmp_path / f"beacon-{host}.log"
    with ronin_process(log, _BEACON, "beacon", "--host", host, "--port", "0") as process:
        yield process

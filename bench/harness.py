"""What every benchmark stands on: output, verdicts, percentiles, the scratch server and its
databases, stopping processes, and the one CPU meter.

CPU is measured one way everywhere, through psutil: the user + system seconds of live
processes (by pid), of this process, of the children it has waited for (and of theirs), and
of the whole machine (user, nice and system of every core: time spent running processes, so
that it compares with theirs).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ronin.store.embedded import start_embedded
from ronin.store.migrate import migrate

Connection = psycopg.AsyncConnection[Any]

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


class BenchError(Exception):
    """The benchmark could not run a step (not a missed goal)."""


# --- Output ----------------------------------------------------------------------------------


def run_benchmark(benchmark: Coroutine[Any, Any, None], *errors: type[Exception]) -> int:
    """Run ``benchmark`` as a command does: 0; 1, said, if it could not run (``BenchError``
    or one of ``errors``); 130 if interrupted (what it started is stopped by then)."""
    try:
        asyncio.run(benchmark)
    except (BenchError, *errors) as exc:
        print(f"error: the benchmark could not run: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: everything started was stopped and removed", file=sys.stderr)
        return 130
    return 0


def say(message: str = "") -> None:
    """Progress, printed as it happens."""
    print(message, flush=True)


def verdict(met: bool) -> str:
    """PASS or MISS."""
    return "PASS" if met else "MISS"


def verdict_line(met: bool, goal: str) -> str:
    """A goal's line: PASS or MISS, then the goal and its figures."""
    return f"{verdict(met)} {goal}"


def percentile(samples: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of ``samples`` (share 0 to 1); NaN if there are none."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else math.nan


def load_average() -> str:
    """The machine's load average (other work on it makes every figure noisier)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def peak_rss_mib(*, children: bool = False) -> float:
    """Peak resident memory of this process (or of its largest waited-for child), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


# --- CPU -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """User and system CPU seconds."""

    user_s: float = 0.0
    system_s: float = 0.0

    @property
    def total_s(self) -> float:
        """User + system."""
        return self.user_s + self.system_s

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user_s - other.user_s, self.system_s - other.system_s)


def cpu_of(process: int | psutil.Process) -> CpuTimes:
    """CPU used so far by one live process (a pid or a psutil.Process); zero once it is gone."""
    try:
        target = process if isinstance(process, psutil.Process) else psutil.Process(process)
        times = target.cpu_times()
    except psutil.Error:
        return CpuTimes()
    return CpuTimes(times.user, times.system)


def own_cpu() -> CpuTimes:
    """CPU used so far by this process."""
    return cpu_of(os.getpid())


def children_cpu() -> CpuTimes:
    """CPU used by the children this process has waited for (with the descendants they did)."""
    times = psutil.Process().cpu_times()
    return CpuTimes(times.children_user, times.children_system)


def machine_cpu_s() -> float:
    """CPU seconds all cores spent running processes since boot (user, nice and system: not
    interrupts, where the kernel does much of the loopback traffic's work)."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system)


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU seconds used over one measured stretch."""

    #: Each watched process's (pid's) user + system seconds.
    by_pid: dict[int, float]
    #: Children of this process waited for meanwhile (and their descendants waited for).
    children: CpuTimes
    #: This process.
    own: CpuTimes
    #: Every core of the machine, running processes.
    machine_s: float
    wall_s: float

    @property
    def processes_s(self) -> float:
        """All the watched processes together."""
        return sum(self.by_pid.values())

    def of(self, pids: Iterable[int]) -> float:
        """Some of the watched processes together."""
        return sum(self.by_pid.get(pid, 0.0) for pid in pids)

    @property
    def machine_share(self) -> float:
        """How busy the machine's cores were, 0 to 1."""
        cores = os.cpu_count() or 1
        return self.machine_s / (self.wall_s * cores) if self.wall_s else 0.0


class CpuMeter:
    """Measures CPU from its creation to ``stop``: of the given live processes, of the children
    waited for meanwhile, of this process and of the machine. A process that exits meanwhile
    counts what it had used when last read: read the meter before stopping what it watches."""

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self._pids = list(dict.fromkeys(pids))
        self._processes = {pid: cpu_of(pid).total_s for pid in self._pids}
        self._children = children_cpu()
        self._own = own_cpu()
        self._machine = machine_cpu_s()
        self._started = time.monotonic()

    def stop(self) -> CpuUsage:
        """CPU used since the meter started."""
        return CpuUsage(
            by_pid={pid: cpu_of(pid).total_s - self._processes[pid] for pid in self._pids},
            children=children_cpu() - self._children,
            own=own_cpu() - self._own,
            machine_s=machine_cpu_s() - self._machine,
            wall_s=time.monotonic() - self._started,
        )


# --- Processes -------------------------------------------------------------------------------


async def stop_process(
    process: asyncio.subprocess.Process,
    first: signal.Signals = signal.SIGTERM,
    grace_s: float = 20.0,
) -> int:
    """Send ``first``; SIGKILL if the process has not exited within ``grace_s``. Its exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(first)
        try:
            async with asyncio.timeout(grace_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a process's log."""
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def ronin_env(url: str, **settings: str) -> dict[str, str]:
    """A Ronin child's environment: this database, these settings, no other RONIN_* one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RONIN_")}
    return env | {"RONIN_DATABASE_URL": url} | settings


# --- The scratch server and its databases ----------------------------------------------------


def server_url(label: str) -> tuple[str, str]:
    """The server to use and where it comes from: RONIN_DATABASE_URL or an embedded one."""
    url = os.environ.get("RONIN_DATABASE_URL")
    if url:
        return url, "RONIN_DATABASE_URL"
    data_dir = Path(tempfile.mkdtemp(prefix=f"ronin-bench-{label}-"))
    # Registered before the server's own exit hook, so it runs after the server has stopped.
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    return start_embedded(data_dir), "embedded"


async def connect(url: str) -> Connection:
    """An autocommit connection."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def fetch_row(url: str, statement: str) -> tuple[Any, ...] | None:
    """The first row of one statement, on a connection of its own."""
    async with await connect(url) as conn:
        return await (await conn.execute(statement)).fetchone()


async def fetch_value(url: str, statement: str) -> Any:
    """The first column of the first row of one statement, on a connection of its own."""
    row = await fetch_row(url, statement)
    assert row is not None
    return row[0]


async def server_facts(url: str) -> str:
    """PostgreSQL version and the settings that matter most here."""
    row = await fetch_row(
        url,
        "SELECT current_setting('server_version'), current_setting('shared_buffers'),"
        " current_setting('work_mem'), current_setting('max_wal_size')",
    )
    assert row is not None
    return (
        f"PostgreSQL {row[0]} (shared_buffers={row[1]}, work_mem={row[2]}, max_wal_size={row[3]})"
    )


@asynccontextmanager
async def scratch_database(
    server: str, name_prefix: str, *, migrated: bool = True
) -> AsyncIterator[str]:
    """A fresh database (migrated unless asked not to); dropped on the way out, whatever
    happened."""
    name = f"{name_prefix}_{secrets.token_hex(4)}"
    async with await connect(server) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server, dbname=name)
    try:
        if migrated:
            async with await connect(url) as conn:
                await migrate(conn)
        yield url
    finally:
        async with await connect(server) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            await conn.execute(drop.format(sql.Identifier(name)))

"""Benchmark the change feed: commit-to-client latency of 100 SSE watchers while 500 changes a
second are written, next to an etcd watch given the same puts in the same run.

Usage: ``python -m bench.changes [--quick] [--watchers N] [--rate R] [--seconds S]
[--writers W] [--side both|ronin|etcd]`` from the repository root; with
``BENCH_CHANGES_DUMP=DIR`` each side's per-change latencies are written to DIR as CSV.

Ronin: a scratch database on ``RONIN_DATABASE_URL`` (or on an embedded server of the
benchmark's own), dropped at the end, holding ``SERVICES`` services; ``ronin serve --workers 0``
(the API alone: no job, no verifier) runs on it as a process of its own on 127.0.0.1. Watchers
(100; ``--quick``: 20) open ``GET /v1/changes/stream`` from the current cursor, spread over two
watching processes (``bench/changes_support.py``). Then this process commits 500 changes a
second (``--quick``: 200) for 10 s (3 s) straight into the database with psycopg, one
``INSERT ... ON CONFLICT DO UPDATE`` of a service's endpoint per transaction, each change due
at its own time, on up to ``--writers`` connections (16: as many writes in flight as it takes
to hold the pace); the endpoint carries the change's sequence number. The wall time right
after each commit returns is its commit time; a watcher stamps each event with the wall time
its bytes were read; latency = read - commit.

etcd (Debian's ``etcd-server``), in the same run: a single member started on free loopback
ports with a data dir of its own, deleted at the end; as many watchers on a key prefix through
etcd's JSON gateway (``POST /v3/watch``), the same number of puts at the same pace
(``POST /v3/kv/put`` on as many keep-alive connections, the sequence number in the value),
measured the same way. Without etcd installed that half is skipped, and said so.

Goals: Ronin's p99 <= 50 ms, and within 3x etcd's p99; every watcher must get every change
once. The command exits 0 whether or not a goal is met and prints PASS or MISS for each; it
fails (exit 1) if a step could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.api import postgres_pids
from bench.api_support import Served, server_process
from bench.changes_support import (
    ENDPOINT_MARK,
    Etcd,
    HttpClient,
    WatcherLog,
    etcd_process,
    etcd_version,
)
from bench.harness import (
    ROOT,
    BenchError,
    CpuMeter,
    connect,
    load_average,
    log_tail,
    percentile,
    ronin_env,
    run_benchmark,
    say,
    scratch_database,
    server_facts,
    server_url,
    verdict_line,
)

P99_GOAL_MS = 50.0
RATIO_GOAL = 3.0
#: Services the writer cycles through: every measured change is an update of one of them.
SERVICES = 100
WATCHING_PROCESSES = 2
#: Between every stream being established and the first write.
SETTLE_S = 1.0
#: A writer further behind its pace than this: the server could not take it.
PACE_TOLERANCE_S = 0.5
#: Other work busier than this (of one core) during a side's writing skews its figures.
BUSY_SHARE = 0.2
#: A directory to write each side's per-change latencies to (CSV), for a closer look.
DUMP_ENV = "BENCH_CHANGES_DUMP"
READY_TIMEOUT_S = 90.0
DONE_TIMEOUT_S = 60.0
ETCD_PREFIX = "bench/svc/"
UPSERT = """
INSERT INTO discovered_services
    (service_id, node_id, node_class, endpoint, capabilities, discovery_metadata, last_seen)
VALUES (%s, %s, 'bench', %s, '["bench.changes"]', '{}', now())
ON CONFLICT (service_id) DO UPDATE SET endpoint = EXCLUDED.endpoint, last_seen = now()
"""


@dataclass(frozen=True, slots=True)
class Size:
    """How many watch, how fast and how long changes are written."""

    watchers: int
    rate: int
    seconds: float
    writers: int = 16

    @property
    def changes(self) -> int:
        return round(self.rate * self.seconds)


FULL = Size(watchers=100, rate=500, seconds=10)
QUICK = Size(watchers=20, rate=200, seconds=3)


@dataclass(slots=True)
class Side:
    """What one side (Ronin or etcd) measured."""

    name: str
    watchers: int = 0
    written: int = 0
    write_s: float = 0.0
    #: The most a change was written after it was due (the writer could not keep the pace).
    most_late_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    #: Each write, from sending it to its commit returning.
    write_ms: list[float] = field(default_factory=list)
    received: int = 0
    missed: int = 0
    duplicated: int = 0
    unknown: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    incomplete_watchers: int = 0
    errors: list[str] = field(default_factory=list)
    server_cpu_s: float = 0.0
    database_cpu_s: float | None = None
    watchers_cpu_s: float = 0.0
    writer_cpu_s: float = 0.0
    machine_share: float = 0.0
    #: CPU seconds the machine spent on anything but the processes above.
    other_cpu_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def p(self, share: float) -> float:
        return percentile(self.latencies_ms, share)

    @property
    def complete(self) -> bool:
        """Every watcher got every change, once."""
        return (
            self.written > 0
            and self.missed == 0
            and self.duplicated == 0
            and self.unknown == 0
            and not self.errors
        )

    def share(self, seconds: float | None) -> str:
        """CPU seconds over the writing, 100% being one core all along."""
        return f"{seconds / self.write_s:.0%}" if seconds is not None and self.write_s else "-"


# --- The watching processes ------------------------------------------------------------------


class WatchingProcess:
    """One ``python -m bench.changes_support`` process and the logs it writes."""

    def __init__(self, process: asyncio.subprocess.Process, out: Path, log: Path) -> None:
        self.process = process
        self.out = out
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, expected: str, timeout_s: float) -> None:
        """Until the process prints ``expected``; BenchError if it exits first or is slow."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = (await self.process.stdout.readline()).decode().strip()
        except TimeoutError:
            line = "(nothing)"
        if line != expected:
            await asyncio.sleep(0.2)  # its last words reach the log
            raise BenchError(
                f"a watching process said {line or 'nothing'!r}, not {expected!r}:\n"
                f"{log_tail(self.log)}"
            )

    def expect(self, changes: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"expect {changes}\n".encode())

    def logs(self) -> list[WatcherLog]:
        return WatcherLog.load(self.out)


@asynccontextmanager
async def watching(
    kind: str, port: int, watchers: int, start: str, workdir: Path
) -> AsyncIterator[list[WatchingProcess]]:
    """``watchers`` streams over ``WATCHING_PROCESSES`` processes, every one established;
    the processes are stopped on the way out, whatever happened."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    counts = [watchers // WATCHING_PROCESSES] * WATCHING_PROCESSES
    for index in range(watchers % WATCHING_PROCESSES):
        counts[index] += 1
    processes: list[WatchingProcess] = []
    try:
        for index, count in enumerate(c for c in counts if c):
            out, log = workdir / f"{kind}-{index}.pickle", workdir / f"{kind}-{index}.log"
            command = [sys.executable, "-m", "bench.changes_support", kind, str(port)]
            command += [str(count), start, str(out)]
            with log.open("wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=ROOT,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    start_new_session=True,
                )
            processes.append(WatchingProcess(process, out, log))
        for watcher in processes:
            await watcher.line("ready", READY_TIMEOUT_S)
        yield processes
    finally:
        for watcher in processes:
            if watcher.process.returncode is None:
                watcher.process.kill()
            await watcher.process.wait()


async def collect(processes: Sequence[WatchingProcess], changes: int) -> list[WatcherLog]:
    """Tell every process how many changes were written; what each watcher received."""
    for watcher in processes:
        watcher.expect(changes)
    for watcher in processes:
        await watcher.line("done", DONE_TIMEOUT_S)
    return [log for watcher in processes for log in watcher.logs()]


# --- Writing at a pace -----------------------------------------------------------------------


@dataclass(slots=True)
class Written:
    """When each change's commit returned (wall time), and how well the pace was kept."""

    commits: array[float]
    #: How long each write took, from sending it to its commit returning.
    write_ms: array[float]
    seconds: float
    most_late_s: float


async def paced(
    total: int, rate: float, writers: Sequence[Callable[[int], Awaitable[None]]]
) -> Written:
    """Changes 0 to ``total - 1``, change i due ``i / rate`` s after the start, each written by
    whichever writer is free (one change at a time each)."""
    commits = array("d", bytes(8 * total))
    numbers = itertools.count()
    started = time.monotonic()
    most_late = 0.0

    async def run(write: Callable[[int], Awaitable[None]]) -> None:
        nonlocal most_late
        for number in numbers:
            if number >= total:
                return
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                most_late = max(most_late, -delay)
            sent = time.time()
            await write(number)
            commits[number] = time.time()
            write_ms[number] = (commits[number] - sent) * 1000

    write_ms = array("d", bytes(8 * total))
    await asyncio.gather(*(run(write) for write in writers))
    return Written(commits, write_ms, time.monotonic() - started, most_late)


def endpoint(number: int) -> str:
    return f"http://127.0.0.1:9{ENDPOINT_MARK}{number}"


def service_id(number: int) -> str:
    return f"did:kos:service:bench{number % SERVICES:04d}:changes"


def node_id(number: int) -> str:
    return f"did:kos:griot:bench{number % SERVICES:04d}"


# --- Measuring -------------------------------------------------------------------------------


def tally(side: Side, logs: Sequence[WatcherLog], commits: array[float]) -> None:
    """Latencies, and what each watcher missed, got twice or got that was never written."""
    total = len(commits)
    side.watchers = len(logs)
    for log in logs:
        seen: set[int] = set()
        latencies = side.latencies_ms
        for number, at in zip(log.seqs, log.times, strict=True):
            if not 0 <= number < total:
                side.unknown += 1
            elif number in seen:
                side.duplicated += 1
            else:
                seen.add(number)
                latencies.append((at - commits[number]) * 1000)
        side.received += len(log.seqs)
        side.missed += total - len(seen)
        side.incomplete_watchers += len(seen) < total
        side.out_of_order += log.out_of_order
        side.reconnects += log.reconnects
        if log.error:
            side.errors.append(log.error)


async def measure(
    side: Side,
    size: Size,
    processes: Sequence[WatchingProcess],
    writers: Sequence[Callable[[int], Awaitable[None]]],
    server_pid: int,
    database_pids: Sequence[int] = (),
) -> None:
    """Write at the pace with the CPU metered, then what the watchers received."""
    await asyncio.sleep(SETTLE_S)
    watcher_pids = [process.pid for process in processes]
    meter = CpuMeter([server_pid, *database_pids, *watcher_pids])
    written = await paced(size.changes, size.rate, writers)
    usage = meter.stop()
    side.written, side.write_s = size.changes, written.seconds
    side.most_late_s, side.write_ms = written.most_late_s, list(written.write_ms)
    side.server_cpu_s = usage.of([server_pid])
    side.database_cpu_s = usage.of(database_pids) if database_pids else None
    side.watchers_cpu_s = usage.of(watcher_pids)
    side.writer_cpu_s = usage.own.total_s
    side.machine_share = usage.machine_share
    side.other_cpu_s = max(0.0, usage.machine_s - usage.processes_s - usage.own.total_s)
    logs = await collect(processes, size.changes)
    tally(side, logs, written.commits)
    if os.environ.get(DUMP_ENV):
        dump(Path(os.environ[DUMP_ENV]) / f"{side.name.lower()}.csv", logs, written)
    say(
        f"  {side.written:,} changes in {side.write_s:.2f} s ({side.written / side.write_s:,.0f}/s,"
        f" at most {side.most_late_s * 1000:.0f} ms behind the pace);"
        f" p50 {side.p(0.5):.1f} ms, p99 {side.p(0.99):.1f} ms, max {side.p(1.0):.1f} ms;"
        f" {side.received:,} events, {side.missed:,} missed, {side.duplicated:,} twice"
    )


def dump(path: Path, logs: Sequence[WatcherLog], written: Written) -> None:
    """Per change: when it committed (epoch s, and s after the first), its write's time, and
    its latency (ms) at the first, median and last of its watchers: where a tail comes from."""
    total = len(written.commits)
    receipts: list[list[float]] = [[] for _ in range(total)]
    for log in logs:
        for number, at in zip(log.seqs, log.times, strict=True):
            if 0 <= number < total:
                receipts[number].append(at)
    start = written.commits[0]
    lines = ["change,committed_at,committed_s,write_ms,first_ms,median_ms,last_ms"]
    for number, (committed, got) in enumerate(zip(written.commits, receipts, strict=True)):
        got.sort()
        first, median, last = (
            (got[0] - committed) * 1000 if got else math.nan,
            (got[len(got) // 2] - committed) * 1000 if got else math.nan,
            (got[-1] - committed) * 1000 if got else math.nan,
        )
        lines.append(
            f"{number},{committed:.4f},{committed - start:.4f},{written.write_ms[number]:.2f},"
            f"{first:.2f},{median:.2f},{last:.2f}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    say(f"  per-change latencies written to {path}")


# --- Ronin -----------------------------------------------------------------------------------


async def current_cursor(port: int) -> str:
    """``GET /v1/changes`` without ``since``: the current cursor."""
    client = HttpClient(port)
    try:
        status, body = await client.request("GET", "/v1/changes")
    finally:
        await client.close()
    if status != 200:
        raise BenchError(f"GET /v1/changes answered {status}: {body[:500]!r}")
    cursor = json.loads(body)["cursor"]
    assert isinstance(cursor, str)
    return cursor


async def ronin_side(server: str, size: Size, workdir: Path) -> Side:
    """Ronin's half: the scratch database, ``ronin serve``, the watchers, the writer."""
    side = Side("Ronin")
    say(f"\nRonin: {size.watchers} SSE watchers, {size.rate}/s for {size.seconds:g} s")
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(scratch_database(server, "ronin_bench_changes"))
        async with await connect(url) as conn:
            for number in range(SERVICES):
                await conn.execute(UPSERT, (service_id(number), node_id(number), endpoint(-1)))
        command = [sys.executable, "-m", "ronin", "serve"]
        command += ["--host", "127.0.0.1", "--port", "0", "--workers", "0"]
        ronin: Served = await stack.enter_async_context(
            server_process("ronin serve", command, ronin_env(url), workdir / "ronin.log", None)
        )
        say(f"  ronin serve (pid {ronin.pid}) listening on 127.0.0.1:{ronin.port}")
        cursor = await current_cursor(ronin.port)
        processes = await stack.enter_async_context(
            watching("ronin", ronin.port, size.watchers, cursor, workdir)
        )
        say(f"  {size.watchers} streams open from cursor {cursor}")
        connections = [
            await stack.enter_async_context(await connect(url)) for _ in range(size.writers)
        ]

        def writer(conn: psycopg.AsyncConnection[object]) -> Callable[[int], Awaitable[None]]:
            async def write(number: int) -> None:
                await conn.execute(UPSERT, (service_id(number), node_id(number), endpoint(number)))

            return write

        await measure(
            side,
            size,
            processes,
            [writer(conn) for conn in connections],
            ronin.pid,
            await postgres_pids(url),
        )
    if ronin.exit_code != 0:
        side.notes.append(
            f"ronin serve exited {ronin.exit_code} on SIGTERM:\n{log_tail(ronin.log)}"
        )
    return side


# --- etcd ------------------------------------------------------------------------------------


def put_body(number: int) -> bytes:
    key = base64.b64encode(f"{ETCD_PREFIX}{number % SERVICES:04d}".encode())
    value = base64.b64encode(str(number).encode())
    return b'{"key":"%s","value":"%s"}' % (key, value)


async def etcd_side(size: Size, workdir: Path) -> Side:
    """etcd's half: etcd, the watchers on the prefix, the same puts at the same pace."""
    side = Side("etcd")
    say(f"\netcd: {size.watchers} watchers (JSON gateway), {size.rate}/s for {size.seconds:g} s")
    async with AsyncExitStack() as stack:
        etcd: Etcd = await stack.enter_async_context(etcd_process(workdir / "etcd.log"))
        say(f"  etcd (pid {etcd.pid}) listening on 127.0.0.1:{etcd.port}")
        processes = await stack.enter_async_context(
            watching("etcd", etcd.port, size.watchers, ETCD_PREFIX, workdir)
        )
        say(f"  {size.watchers} watches created on {ETCD_PREFIX}")
        clients = [HttpClient(etcd.port) for _ in range(size.writers)]
        for client in clients:
            stack.push_async_callback(client.close)
            await client.request("GET", "/version")  # connected before the first change is due

        def writer(client: HttpClient) -> Callable[[int], Awaitable[None]]:
            async def write(number: int) -> None:
                status, body = await client.request("POST", "/v3/kv/put", put_body(number))
                if status != 200:
                    raise BenchError(f"etcd put answered {status}: {body[:500]!r}")

            return write

        await measure(side, size, processes, [writer(client) for client in clients], etcd.pid)
    if etcd.exit_code not in (0, -signal.SIGTERM):
        side.notes.append(f"etcd exited {etcd.exit_code} on SIGTERM:\n{log_tail(etcd.log)}")
    return side


# --- The table -------------------------------------------------------------------------------


def print_report(size: Size, sides: list[Side], etcd_missing: str | None) -> None:
    """Both sides side by side, then each goal with PASS or MISS."""
    say("")
    if not sides:
        say(f"NOTE {etcd_missing}: nothing was measured")
        return
    say(
        f"{size.watchers} watchers, {size.changes:,} changes at {size.rate}/s"
        f" ({size.seconds:g} s), one per transaction, {size.writers} writer connections,"
        f" watchers in {WATCHING_PROCESSES} processes"
    )

    def row(label: str, cells: Callable[[Side], str]) -> None:
        say(f"{label:<34}" + "".join(f"{cells(side):>16}" for side in sides))

    row("", lambda side: side.name)
    row(
        "written /s (most behind the pace)",
        lambda s: f"{s.written / s.write_s:,.0f} ({s.most_late_s * 1000:.0f} ms)",
    )
    row(
        "a write's commit p50 / p99 ms",
        lambda s: f"{percentile(s.write_ms, 0.5):.1f} / {percentile(s.write_ms, 0.99):.1f}",
    )
    row("events received / expected", lambda s: f"{s.received:,}/{s.written * s.watchers:,}")
    row("missed / twice / unknown", lambda s: f"{s.missed} / {s.duplicated} / {s.unknown}")
    row("watchers missing some", lambda s: f"{s.incomplete_watchers}")
    row("out of cursor order / reconnects", lambda s: f"{s.out_of_order} / {s.reconnects}")
    row("latency min ms", lambda s: f"{s.p(0.0):.1f}")
    row("latency p50 ms", lambda s: f"{s.p(0.5):.1f}")
    row("latency p99 ms", lambda s: f"{s.p(0.99):.1f}")
    row("latency max ms", lambda s: f"{s.p(1.0):.1f}")
    row("CPU server", lambda s: s.share(s.server_cpu_s))
    row("CPU PostgreSQL", lambda s: s.share(s.database_cpu_s))
    row("CPU watching processes", lambda s: s.share(s.watchers_cpu_s))
    row("CPU writer (this process)", lambda s: s.share(s.writer_cpu_s))
    row("CPU anything else on the machine", lambda s: s.share(s.other_cpu_s))
    row("machine busy (all cores)", lambda s: f"{s.machine_share:.0%}")
    say("(CPU during the writing, 100% being one core all along)")
    say("")
    ronin = next((side for side in sides if side.name == "Ronin"), None)
    etcd = next((side for side in sides if side.name == "etcd"), None)
    if ronin is not None:
        p99 = ronin.p(0.99)
        say(verdict_line(p99 <= P99_GOAL_MS, f"Ronin p99 <= {P99_GOAL_MS:.0f} ms: {p99:.1f} ms"))
        say(
            verdict_line(
                ronin.complete,
                f"every Ronin watcher got every change once: {ronin.missed} missed,"
                f" {ronin.duplicated} twice, {ronin.unknown} unknown",
            )
        )
        if etcd is not None:
            ratio = p99 / etcd.p(0.99)
            say(
                verdict_line(
                    ratio <= RATIO_GOAL,
                    f"Ronin p99 within {RATIO_GOAL:.0f}x etcd's: {ratio:.2f}x"
                    f" ({p99:.1f} ms / {etcd.p(0.99):.1f} ms)",
                )
            )
    for side in sides:
        if side.other_cpu_s > BUSY_SHARE * side.write_s:
            say(
                f"WARNING other work used {side.share(side.other_cpu_s)} of a core during"
                f" {side.name}'s writing: its figures are skewed"
            )
        if side.most_late_s > PACE_TOLERANCE_S:
            say(
                f"NOTE {side.name} could not take the pace: its writer fell up to"
                f" {side.most_late_s:.1f} s behind ({side.written / side.write_s:,.0f} changes/s"
                f" instead of {size.rate}); its latencies are those of what it could take"
            )
    if etcd is not None and not etcd.complete:
        say(f"NOTE etcd's watchers missed {etcd.missed}, got {etcd.duplicated} twice")
    if etcd_missing:
        say(f"NOTE {etcd_missing}: the etcd half and the ratio were skipped")
    for side in sides:
        for error in side.errors[:5]:
            say(f"NOTE {side.name} watcher error: {error}")
        for note in side.notes:
            say(f"NOTE {note}")


async def run(size: Size, which: str) -> None:
    """Each side, one after the other, then the table."""
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    version = etcd_version()
    say(
        f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {platform.platform()},"
        f" Python {platform.python_version()}; {version or 'etcd not installed'}"
    )
    say(f"at the start: {load_average()}")
    sides: list[Side] = []
    started = time.monotonic()
    etcd_missing = None
    with tempfile.TemporaryDirectory(prefix="ronin-bench-changes-") as workdir:
        if which in ("both", "ronin"):
            server, origin = server_url("changes")
            say(f"server: {await server_facts(server)} [{origin}]")
            sides.append(await ronin_side(server, size, Path(workdir)))
        if which in ("both", "etcd"):
            if version is None:
                etcd_missing = "etcd is not installed (apt-get install etcd-server)"
                say(f"\n{etcd_missing}: skipping its half")
            else:
                sides.append(await etcd_side(size, Path(workdir)))
    print_report(size, sides, etcd_missing)
    say(f"wall time of the benchmark: {time.monotonic() - started:.0f} s; {load_average()}")


def parse_size(argv: list[str]) -> tuple[Size, str]:
    """--quick, overrides of its sizes, and which side to run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.changes", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small size (what CI runs)")
    parser.add_argument("--watchers", type=int, help="streams on each side (100; quick 20)")
    parser.add_argument("--rate", type=int, help="changes written a second (500; quick 200)")
    parser.add_argument("--seconds", type=float, help="seconds of writing (10; quick 3)")
    parser.add_argument(
        "--writers",
        type=int,
        help="connections the writer commits on, one change at a time each (16)",
    )
    parser.add_argument("--side", choices=("both", "ronin", "etcd"), default="both")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    size = Size(
        watchers=args.watchers or size.watchers,
        rate=args.rate or size.rate,
        seconds=args.seconds or size.seconds,
        writers=args.writers or size.writers,
    )
    if min(size.watchers, size.rate, size.changes, size.writers) < 1:
        parser.error("--watchers, --rate and --seconds must make at least one change and watcher")
    return size, str(args.side)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    size, which = parse_size(sys.argv[1:] if argv is None else argv)
    return run_benchmark(run(size, which), psycopg.Error, OSError)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the job queue: real worker processes next to a naive claim loop, enqueue-to-start
latency, and what a transaction held open for the whole run costs.

Usage: ``python -m bench.job_queue [--jobs N] [--latency-jobs M] [--quick]`` from the
repository root.

Each scenario gets a scratch database on ``RONIN_DATABASE_URL`` (or on an embedded server of
the benchmark's own), migrated, and dropped at the end whatever happens. Ronin's jobs run the
no-op executor of ``bench/executors.py`` in ``python -m ronin worker`` processes, so what is
measured is the queue itself: claiming, leasing, finishing. The command exits 0 whether or not
a goal is met and prints PASS or MISS for each goal.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from bench.harness import (
    ROOT,
    BenchError,
    Connection,
    CpuMeter,
    CpuUsage,
    connect,
    fetch_value,
    log_tail,
    peak_rss_mib,
    percentile,
    ronin_env,
    say,
    server_url,
    verdict,
)
from bench.harness import scratch_database as harness_scratch_database
from ronin.jobs.submit import submit_job
from ronin.store.jobs import JobStore
from ronin.store.queries import query

PARAMS = {"target": {"type": "did", "value": "did:kos:bench:noop"}, "protocols": ["http-api"]}
MAX_ATTEMPTS = 5
WORKER_SLOTS = 16
WORKER_COMMAND = (
    sys.executable,
    "-m",
    "ronin",
    "worker",
    "--concurrency",
    str(WORKER_SLOTS),
    "--executor",
    "bench.executors:noop",
)
FAST_POLL_S = 0.2
SLOW_POLL_S = 2.0
IDLE_S = 1.0
SUBMIT_GAP_S = 0.005
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CHECK_EVERY_S = 0.2
LATENCY_BUDGET_S = 60.0
PROFILE_JOBS = 2_000
PROFILE_CALLS = 320
LEASE = timedelta(seconds=15)
RATIO_GOAL = 5.0
LATENCY_GOAL_MS = 10.0
BUSY_SHARE = 0.2  # a machine busier than this without us skews the figures

NAIVE_CLAIM = (
    "SELECT job_id FROM discovery_jobs WHERE status = 'pending'"
    " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)
LEASED_LOOP_LEASE = timedelta(seconds=30)
NAIVE_START = "UPDATE discovery_jobs SET status = 'running' WHERE job_id = %s"
NAIVE_COMPLETE = (
    "UPDATE discovery_jobs SET status = 'completed', completed_at = now() WHERE job_id = %s"
)
# insert_job without its pg_notify: what an idle worker sees when only polling wakes it.
SILENT_INSERT = """
WITH job AS (
    INSERT INTO discovery_jobs (status, params) VALUES ('pending', %(params)s) RETURNING job_id
)
INSERT INTO discovery_job_state (job_id, max_attempts) SELECT job_id, %(max_attempts)s FROM job
"""
LISTENING_WORKERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database()
  AND query IN ('LISTEN ronin_job_cancel', 'LISTEN "ronin_job_cancel"')
"""
RONIN_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'ronin'
"""
COMPLETED = "SELECT count(*) FROM discovery_jobs WHERE completed_at IS NOT NULL"
CLAIM_WINDOW = """
SELECT count(j.completed_at), extract(epoch FROM max(j.completed_at) - min(s.started_at))
FROM discovery_jobs AS j JOIN discovery_job_state AS s ON s.job_id = j.job_id
"""
# One claim statement stamps its attempts with one transaction time: distinct (worker,
# started_at) pairs count the claims that got at least one job.
TALLY = """
SELECT (SELECT count(*) FROM discovery_jobs),
       (SELECT count(*) FROM discovery_jobs WHERE status = 'completed'),
       count(*),
       count(*) FILTER (WHERE outcome = 'completed'),
       count(DISTINCT job_id) FILTER (WHERE outcome = 'completed'),
       count(DISTINCT (worker_id, started_at))
FROM discovery_job_attempts
"""
START_LATENCIES = """
SELECT extract(epoch FROM s.started_at - j.created_at) * 1000
FROM discovery_jobs AS j JOIN discovery_job_state AS s ON s.job_id = j.job_id
WHERE s.started_at IS NOT NULL
"""
TABLE_STATS = """
SELECT relname, n_dead_tup, n_live_tup, pg_total_relation_size(relid)
FROM pg_stat_user_tables
WHERE relname IN ('discovery_jobs', 'discovery_job_state')
ORDER BY relname
"""
EXPLAIN_CLAIM = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(query("claim_jobs"))
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


# --- What is measured ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many jobs each scenario runs, and how long a throughput run may last."""

    jobs: int
    latency_jobs: int
    bloat_jobs: int
    budget_s: float


@dataclass(frozen=True, slots=True)
class Tally:
    """How the jobs of a run ended, from the database."""

    jobs: int
    completed: int
    attempts: int
    completed_attempts: int
    distinct_completed: int
    claims: int

    def exactly_once(self, finished: bool) -> bool:
        """Every completed job ended once; a finished run completed them all, in one attempt."""
        once = self.completed == self.completed_attempts == self.distinct_completed
        if not finished:
            return once
        return once and self.completed == self.jobs == self.attempts

    def describe(self) -> str:
        """The counts behind the verdict."""
        return (
            f"{self.completed}/{self.jobs} completed, {self.attempts} attempts"
            f" ({self.completed_attempts} completed, on {self.distinct_completed} jobs)"
        )

    @property
    def jobs_per_claim(self) -> float:
        """How many jobs a claim statement that got any took, on average."""
        return self.attempts / self.claims if self.claims else 0.0


@dataclass(slots=True)
class Run:
    """One throughput run: jobs completed over the time from first claim to last completion."""

    label: str
    jobs: int
    done: int
    seconds: float
    finished: bool = True
    cpu: CpuUsage | None = None
    tally: Tally | None = None
    exit_codes: list[int] = field(default_factory=list)
    table_stats: list[tuple[str, int, int, int]] = field(default_factory=list)
    idle_claim: str = ""

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Enqueue-to-start milliseconds of one configuration."""

    label: str
    samples: list[float]

    def at(self, share: float) -> float:
        """Nearest-rank percentile (share 0 to 1)."""
        return percentile(self.samples, share)


@dataclass(slots=True)
class Report:
    """Everything the summary prints."""

    ronin: dict[int, Run] = field(default_factory=dict)
    naive: dict[int, Run] = field(default_factory=dict)
    leased: dict[int, Run] = field(default_factory=dict)
    latencies: list[Latency] = field(default_factory=list)
    bloat: Run | None = None
    skewed: bool = False


# --- Databases -------------------------------------------------------------------------------


def scratch_database(server: str, label: str) -> AbstractAsyncContextManager[str]:
    """A fresh migrated database for ``label``; dropped on the way out."""
    return harness_scratch_database(server, f"ronin_bench_queue_{label}")


@asynccontextmanager
async def held_snapshot(url: str) -> AsyncIterator[int]:
    """A repeatable-read transaction with an xid, open until the block ends: no row version
    created after it starts can be removed meanwhile."""
    async with await connect(url) as conn:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        row = await (await conn.execute("SELECT txid_current()")).fetchone()
        assert row is not None
        try:
            yield int(row[0])
        finally:
            await conn.execute("ROLLBACK")


async def enqueue(url: str, jobs: int) -> float:
    """Enqueue no-op jobs through ``JobStore.insert``, all in one transaction; its seconds."""
    started = time.perf_counter()
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        store = JobStore(pool)
        async with pool.connection() as conn, conn.transaction():
            for _ in range(jobs):
                await store.insert(PARAMS, max_attempts=MAX_ATTEMPTS, conn=conn)
    return time.perf_counter() - started


async def wait_completed(
    url: str, jobs: int, budget_s: float, check: Callable[[], None] = lambda: None
) -> bool:
    """Wait until ``jobs`` jobs have ended; False if the budget ran out first."""
    deadline = time.monotonic() + budget_s
    async with await connect(url) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute(COMPLETED)).fetchone()
            if row is not None and row[0] >= jobs:
                return True
            check()
            await asyncio.sleep(CHECK_EVERY_S)
    return False


async def claim_window(url: str) -> tuple[int, float]:
    """Jobs completed, and seconds from the first claim to the last completion."""
    async with await connect(url) as conn:
        row = await (await conn.execute(CLAIM_WINDOW)).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


async def tally(url: str) -> Tally:
    """How the jobs ended and how many attempts they took."""
    async with await connect(url) as conn:
        row = await (await conn.execute(TALLY)).fetchone()
    assert row is not None
    return Tally(*(int(value) for value in row))


async def table_stats(url: str) -> list[tuple[str, int, int, int]]:
    """(table, dead tuples, live tuples, bytes) of the queue's two hot tables."""
    async with await connect(url) as conn:
        # Exiting backends flush their statistics: wait until the workers' are gone.
        for _ in range(100):
            if not await fetch_row_value(conn, RONIN_BACKENDS):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        rows = await (await conn.execute(TABLE_STATS)).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


async def fetch_row_value(conn: Connection, statement: str) -> Any:
    """The first column of the first row, on ``conn``."""
    row = await (await conn.execute(statement)).fetchone()
    return row[0] if row else None


def claim_params(batch: int) -> dict[str, Any]:
    """A value for each placeholder of claim_jobs: ours where known, else NULL (no filter)."""
    known = {"worker_id": "bench", "batch": batch, "lease": LEASE}
    names = PLACEHOLDER.findall(query("claim_jobs").as_string())
    return {name: known.get(name) for name in names}


async def explain_claim(url: str, batch: int) -> str:
    """What one claim costs on the server (EXPLAIN ANALYZE, rolled back)."""
    try:
        async with await connect(url) as conn, conn.transaction(force_rollback=True):
            cur = await conn.execute(EXPLAIN_CLAIM, claim_params(batch))
            row = await cur.fetchone()
    except psycopg.Error as exc:
        return f"unavailable ({exc})"
    assert row is not None
    plan = row[0][0]
    top = plan["Plan"]
    buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    return (
        f"planning {plan['Planning Time']:.2f} ms, execution {plan['Execution Time']:.2f} ms,"
        f" {buffers} buffers"
    )


# --- Ronin's workers -------------------------------------------------------------------------


def worker_env(url: str, poll_s: float) -> dict[str, str]:
    """The environment of a worker process: this database, this poll, no other RONIN_*."""
    return ronin_env(url, RONIN_POLL_INTERVAL_S=str(poll_s))


def open_log(path: Path) -> int:
    """A file descriptor for a worker's output."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


class WorkerGroup:
    """``python -m ronin worker`` processes on one database, each with its own log."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.log_dir = log_dir
        self.processes: list[asyncio.subprocess.Process] = []
        self.logs: list[Path] = []
        self.exit_codes: list[int] = []

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [process.pid for process in self.processes]

    async def spawn(self, poll_s: float) -> None:
        """Start one more worker."""
        log = self.log_dir / f"worker-{secrets.token_hex(4)}.log"
        descriptor = open_log(log)
        try:
            process = await asyncio.create_subprocess_exec(
                *WORKER_COMMAND,
                cwd=ROOT,
                env=worker_env(self.url, poll_s),
                stdin=subprocess.DEVNULL,
                stdout=descriptor,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(descriptor)
        self.processes.append(process)
        self.logs.append(log)

    def check_alive(self) -> None:
        """Raise, with its log, if a worker has exited on its own."""
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.returncode is not None:
                tail = log_tail(log, 2000)
                raise BenchError(f"worker {process.pid} exited {process.returncode}:\n{tail}")

    async def wait_listening(self) -> None:
        """Wait until every worker listens for new jobs (and so runs its claim loop)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with await connect(self.url) as conn:
            while await fetch_row_value(conn, LISTENING_WORKERS) < len(self.processes):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"workers not listening after {READY_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.05)

    async def stop(self) -> list[int]:
        """SIGTERM every worker and wait; one still running after the timeout is killed."""
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self.exit_codes = [p.returncode if p.returncode is not None else -1 for p in self.processes]
        return self.exit_codes


@asynccontextmanager
async def running_workers(
    url: str, count: int, poll_s: float, log_dir: Path
) -> AsyncIterator[WorkerGroup]:
    """``count`` workers, listening; all stopped on the way out."""
    group = WorkerGroup(url, log_dir)
    try:
        for _ in range(count):
            await group.spawn(poll_s)
        await group.wait_listening()
        yield group
    finally:
        await group.stop()


async def ronin_throughput(
    server: str, label: str, jobs: int, workers: int, budget_s: float, log_dir: Path, *, hold: bool
) -> Run:
    """N jobs enqueued at once for idle workers; jobs/s from the first claim to the last end."""
    async with scratch_database(server, label) as url:
        snapshot: AbstractAsyncContextManager[Any] = (
            held_snapshot(url) if hold else contextlib.nullcontext()
        )
        async with snapshot, running_workers(url, workers, FAST_POLL_S, log_dir) as group:
            enqueue_s = await enqueue(url, jobs)
            meter = CpuMeter(group.pids)
            finished = await wait_completed(url, jobs, budget_s, group.check_alive)
            cpu = meter.stop()
            exit_codes = await group.stop()
            stats = await table_stats(url)
            idle_claim = await explain_claim(url, WORKER_SLOTS)
        done, seconds = await claim_window(url)
        run = Run(label, jobs, done, seconds, finished, cpu, await tally(url), exit_codes)
        run.table_stats, run.idle_claim = stats, idle_claim
    say_run(run, f"enqueued in {enqueue_s:.1f} s")
    return run


def say_run(run: Run, extra: str = "") -> None:
    """One run's figures."""
    cut = "" if run.finished else f" (CUT OFF at the time budget: {run.done}/{run.jobs})"
    say(f"  {run.label}: {run.done} jobs in {run.seconds:.2f} s = {run.rate:,.0f} jobs/s{cut}")
    if run.cpu is not None:
        per_job = run.cpu.processes_s / max(run.done, 1) * 1000
        say(
            f"    CPU: workers {run.cpu.processes_s:.1f} s ({per_job:.2f} ms/job);"
            f" machine {run.cpu.machine_s:.1f} s busy of {run.cpu.wall_s:.1f} s wall"
            f" x {os.cpu_count()} cores ({run.cpu.machine_share:.0%})"
        )
    if run.tally is not None:
        once = verdict(run.tally.exactly_once(run.finished))
        codes = f"; worker exit codes {run.exit_codes}" if run.exit_codes else ""
        say(f"    exactly once: {once} ({run.tally.describe()}){codes}")
        say(
            f"    claims: {run.tally.claims:,} statements got jobs,"
            f" {run.tally.jobs_per_claim:.1f} jobs each on average"
        )
    for name, dead, live, size in run.table_stats:
        say(f"    {name}: {dead:,} dead / {live:,} live tuples, {size / 2**20:.1f} MiB")
    if run.idle_claim:
        say(f"    one claim on the emptied queue: {run.idle_claim}")
    if extra:
        say(f"    {extra}")


# --- The naive loop --------------------------------------------------------------------------


def naive_loop(url: str) -> None:
    """A child process: claim one job per transaction and complete it until none is left.

    Says ``ready`` once connected, starts on a line from stdin, and prints its figures as
    JSON: jobs done, wall-clock start and end, CPU seconds.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        print("ready", flush=True)
        sys.stdin.readline()
        done, started, meter = 0, time.time(), CpuMeter()
        ended = started
        while True:
            with conn.transaction():
                row = conn.execute(NAIVE_CLAIM).fetchone()
                if row is None:
                    break
                conn.execute(NAIVE_START, row)
            conn.execute(NAIVE_COMPLETE, row)
            done, ended = done + 1, time.time()
    figures = {"done": done, "start": started, "end": ended, "cpu": meter.stop().own.total_s}
    print(json.dumps(figures), flush=True)


def leased_loop(url: str) -> None:
    """A child process: the naive loop with Ronin's own bookkeeping (lease, attempt, result):
    Ronin's claim and finish statements, one job at a time, nothing batched or concurrent.
    Isolates what batching and concurrency buy from what the bookkeeping costs."""

    async def loop() -> dict[str, Any]:
        async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
            store = JobStore(pool)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            done, started, meter = 0, time.time(), CpuMeter()
            ended = started
            while claimed := await store.claim("leased-loop", batch=1, lease=LEASED_LOOP_LEASE):
                await store.finish(claimed[0], "completed", result={})
                done, ended = done + 1, time.time()
            cpu_s = meter.stop().own.total_s
            return {"done": done, "start": started, "end": ended, "cpu": cpu_s}

    print(json.dumps(asyncio.run(loop())), flush=True)


async def spawn_naive(url: str, mode: str = "--naive-loop") -> asyncio.subprocess.Process:
    """One naive loop in a process of its own, connected and waiting for the start."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.job_queue",
        mode,
        url,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    if (await process.stdout.readline()).strip() != b"ready":
        await process.wait()
        raise BenchError(f"a naive loop exited {process.returncode} before it was ready")
    return process


async def collect_naive(processes: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    """Start every naive loop at once and gather their figures."""
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        process.stdin.close()
    figures = []
    for process in processes:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if await process.wait() != 0 or not line:
            raise BenchError(f"a naive loop exited {process.returncode}")
        figures.append(json.loads(line))
    return figures


async def naive_throughput(
    server: str,
    label: str,
    jobs: int,
    processes: int,
    budget_s: float,
    mode: str = "--naive-loop",
) -> Run:
    """The same N jobs through the naive loop in ``processes`` processes."""
    async with scratch_database(server, label) as url:
        enqueue_s = await enqueue(url, jobs)
        children: list[asyncio.subprocess.Process] = []
        try:
            for _ in range(processes):
                children.append(await spawn_naive(url, mode))
            async with asyncio.timeout(budget_s):
                figures = await collect_naive(children)
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        completed = int(await fetch_value(url, COMPLETED))
    seconds = max(f["end"] for f in figures) - min(f["start"] for f in figures)
    cpu_s = sum(f["cpu"] for f in figures)
    run = Run(label, jobs, sum(f["done"] for f in figures), seconds, completed == jobs)
    say_run(run, f"enqueued in {enqueue_s:.1f} s; loops' CPU {cpu_s:.1f} s")
    return run


# --- Latency ---------------------------------------------------------------------------------


async def submit_slowly(url: str, count: int, *, notify: bool) -> None:
    """Submit jobs one at a time, a short gap between them; without NOTIFY if not ``notify``."""
    if not notify:
        async with await connect(url) as conn:
            values = {"params": Jsonb(PARAMS), "max_attempts": MAX_ATTEMPTS}
            for _ in range(count):
                await conn.execute(SILENT_INSERT, values)
                await asyncio.sleep(SUBMIT_GAP_S)
        return
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        store = JobStore(pool)
        for _ in range(count):
            await submit_job(store, PARAMS, max_attempts=MAX_ATTEMPTS)
            await asyncio.sleep(SUBMIT_GAP_S)


async def start_latency(
    server: str, label: str, count: int, poll_s: float, log_dir: Path, *, notify: bool = True
) -> Latency:
    """Enqueue-to-start milliseconds of jobs submitted one by one to an idle worker."""
    async with (
        scratch_database(server, "latency") as url,
        running_workers(url, 1, poll_s, log_dir) as group,
    ):
        await asyncio.sleep(IDLE_S)
        await submit_slowly(url, count, notify=notify)
        if not await wait_completed(url, count, LATENCY_BUDGET_S, group.check_alive):
            say(f"  {label}: not every job completed within {LATENCY_BUDGET_S:.0f} s")
        async with await connect(url) as conn:
            rows = await (await conn.execute(START_LATENCIES)).fetchall()
    latency = Latency(label, [float(row[0]) for row in rows])
    say(
        f"  {label}: {len(latency.samples)} jobs, p50 {latency.at(0.5):.1f} ms,"
        f" p95 {latency.at(0.95):.1f} ms, p99 {latency.at(0.99):.1f} ms,"
        f" max {max(latency.samples, default=math.nan):.1f} ms"
    )
    return latency


# --- Where the time goes --------------------------------------------------------------------


async def describe_machine(server: str, origin: str) -> None:
    """What the figures were measured on."""
    async with await connect(server) as conn:
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            settings[name] = await fetch_row_value(conn, f"SHOW {name}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    say(
        f"machine: nproc {affinity} (cpu_count {os.cpu_count()}), {platform.machine()},"
        f" Python {platform.python_version()}, psycopg {psycopg.__version__}"
    )
    say(
        f"PostgreSQL {settings['server_version']} ({origin}): fsync {settings['fsync']},"
        f" synchronous_commit {settings['synchronous_commit']},"
        f" shared_buffers {settings['shared_buffers']}"
    )


async def check_machine_load(when: str, report: Report) -> None:
    """How busy the machine is without us, over one second: other work skews every figure."""
    meter = CpuMeter()
    await asyncio.sleep(1.0)
    share = meter.stop().machine_share
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    busy = share > BUSY_SHARE
    report.skewed |= busy
    warning = "  WARNING: something else is running; figures are skewed" if busy else ""
    say(f"  machine load {when}: {share:.0%} busy over 1 s, load average {load}{warning}")


async def throughput_scenarios(server: str, sizes: Sizes, log_dir: Path, report: Report) -> None:
    """Scenarios 1 and 2: Ronin's workers and the naive loop, 1 and 4 processes each."""
    say(f"\n1. Throughput: {sizes.jobs:,} no-op jobs, real workers ({WORKER_SLOTS} slots each)")
    for workers in (1, 4):
        report.ronin[workers] = await ronin_throughput(
            server, f"ronin{workers}", sizes.jobs, workers, sizes.budget_s, log_dir, hold=False
        )
    say(f"\n2. Baseline: the naive one-row-at-a-time claim loop, {sizes.jobs:,} jobs")
    for processes in (1, 4):
        report.naive[processes] = await naive_throughput(
            server, f"naive{processes}", sizes.jobs, processes, sizes.budget_s
        )
    for count in (1, 4):
        ratio = report.ronin[count].rate / max(report.naive[count].rate, 1e-9)
        say(f"  Ronin / naive with {count} process(es): {ratio:.2f}x")
    say(f"\n2b. Baseline: Ronin's own claim and finish, one job at a time, {sizes.jobs:,} jobs")
    for processes in (1, 4):
        report.leased[processes] = await naive_throughput(
            server,
            f"leased{processes}",
            sizes.jobs,
            processes,
            sizes.budget_s,
            mode="--leased-loop",
        )
        ratio = report.ronin[processes].rate / max(report.leased[processes].rate, 1e-9)
        say(f"  Ronin / one-at-a-time with {processes} process(es): {ratio:.2f}x")


async def latency_scenarios(server: str, sizes: Sizes, log_dir: Path, report: Report) -> None:
    """Scenario 3: enqueue-to-start latency with one idle worker."""
    say(
        f"\n3. Enqueue-to-start latency: {sizes.latency_jobs:,} jobs submitted one by one,"
        f" {SUBMIT_GAP_S * 1000:.0f} ms apart,"
    )
    say("   to one idle worker (started_at - created_at, both server clocks)")
    cases = (
        (f"poll {FAST_POLL_S} s + NOTIFY", FAST_POLL_S, True),
        (f"poll {SLOW_POLL_S:.0f} s + NOTIFY", SLOW_POLL_S, True),
        (f"poll {SLOW_POLL_S:.0f} s, no NOTIFY (polling alone)", SLOW_POLL_S, False),
    )
    for label, poll_s, notify in cases:
        report.latencies.append(
            await start_latency(server, label, sizes.latency_jobs, poll_s, log_dir, notify=notify)
        )


async def bloat_scenario(server: str, sizes: Sizes, log_dir: Path, report: Report) -> None:
    """Scenario 4: 4 workers while another transaction holds back the xmin horizon."""
    say(f"\n4. Bloat: {sizes.bloat_jobs:,} jobs, 4 workers, a REPEATABLE READ transaction with")
    say("   an xid open for the whole run")
    report.bloat = await ronin_throughput(
        server, "bloat", sizes.bloat_jobs, 4, sizes.budget_s, log_dir, hold=True
    )
    ratio = report.bloat.rate / max(report.ronin[4].rate, 1e-9)
    say(f"  jobs/s with the transaction held / without: {ratio:.2f}x")


SUMMARY_ROW = "  {:<56} {:>12} {:>12} {:>7}  {}"


def summary_row(
    label: str, first: str = "", second: str = "", ratio: str = "", goal: str = ""
) -> None:
    """One line of the summary table."""
    say(SUMMARY_ROW.format(label, first, second, ratio, goal))


def summarize_throughput(report: Report) -> None:
    """Ronin next to the naive loop, like with like, and the exactly-once checks."""
    summary_row("", "Ronin", "naive", "ratio", "goal")
    for count in (1, 4):
        ronin, naive = report.ronin[count], report.naive[count]
        ratio = ronin.rate / max(naive.rate, 1e-9)
        goal = f">= {RATIO_GOAL:.0f}x: {verdict(ratio >= RATIO_GOAL)}"
        label = f"jobs/s, {count} process(es) each"
        summary_row(label, f"{ronin.rate:,.0f}", f"{naive.rate:,.0f}", f"{ratio:.2f}x", goal)
    summary_row("", "Ronin", "1-at-a-time", "ratio", "")
    for count, leased in sorted(report.leased.items()):
        ratio = report.ronin[count].rate / max(leased.rate, 1e-9)
        label = f"jobs/s, {count} process(es), same statements"
        summary_row(
            label,
            f"{report.ronin[count].rate:,.0f}",
            f"{leased.rate:,.0f}",
            f"{ratio:.2f}x",
            "(info)",
        )
    runs = [*report.ronin.values(), *([report.bloat] if report.bloat else [])]
    for run in runs:
        ok = run.tally is not None and run.tally.exactly_once(run.finished)
        summary_row(f"every job ended exactly once, {run.label}", goal=verdict(ok))


def summarize_latency(report: Report) -> None:
    """Enqueue-to-start percentiles; the goal is on the first (the default) configuration."""
    summary_row("enqueue-to-start, ms", "p50", "p99")
    for index, latency in enumerate(report.latencies):
        goal = f"p50 < {LATENCY_GOAL_MS:.0f} ms: {verdict(latency.at(0.5) < LATENCY_GOAL_MS)}"
        p50, p99 = f"{latency.at(0.5):.1f}", f"{latency.at(0.99):.1f}"
        summary_row(f"  {latency.label}", p50, p99, goal=goal if index == 0 else "(info)")


def summarize_bloat(report: Report) -> None:
    """The run with the xmin horizon held back next to scenario 1's 4-worker run."""
    if report.bloat is None:
        return
    bloat, plain = report.bloat, report.ronin[4]
    summary_row("4 workers, a transaction holding back xmin", "held", "not held", "ratio")
    ratio = f"{bloat.rate / max(plain.rate, 1e-9):.2f}x"
    summary_row("  jobs/s", f"{bloat.rate:,.0f}", f"{plain.rate:,.0f}", ratio, "(info)")
    for (name, dead, *_), (_, plain_dead, *_) in zip(
        bloat.table_stats, plain.table_stats, strict=False
    ):
        summary_row(f"  dead tuples, {name}", f"{dead:,}", f"{plain_dead:,}", goal="(info)")


def print_summary(report: Report) -> None:
    """The one table: each goal with PASS/MISS, and the figures beside them."""
    say("\nSummary")
    summarize_throughput(report)
    summarize_latency(report)
    summarize_bloat(report)
    rss_self, rss_children = peak_rss_mib(), peak_rss_mib(children=True)
    say(f"\nPeak RSS: this process {rss_self:.0f} MiB; largest child {rss_children:.0f} MiB")
    if report.skewed:
        say("WARNING: other work ran on this machine during the benchmark; figures are skewed.")


async def run(sizes: Sizes) -> None:
    """Every scenario on scratch databases, then the summary."""
    started = time.monotonic()
    server, origin = server_url("queue")
    await describe_machine(server, origin)
    log_dir = Path(tempfile.mkdtemp(prefix="ronin-bench-queue-logs-"))
    atexit.register(shutil.rmtree, log_dir, ignore_errors=True)
    report = Report()
    await check_machine_load("before", report)
    await throughput_scenarios(server, sizes, log_dir, report)
    await check_machine_load("after scenarios 1-2", report)
    await latency_scenarios(server, sizes, log_dir, report)
    await check_machine_load("after scenario 3", report)
    await bloat_scenario(server, sizes, log_dir, report)
    await check_machine_load("after scenario 4", report)
    await check_machine_load("after scenario 5", report)
    print_summary(report)
    say(f"Total time: {time.monotonic() - started:.0f} s")


def parse_sizes(argv: Sequence[str] | None = None) -> tuple[Sizes, str | None]:
    """Sizes from the command line (and the hidden naive-loop mode's URL)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (default 5,000)")
    parser.add_argument("--latency-jobs", type=int, help="jobs per latency case (default 1,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--naive-loop", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--leased-loop", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jobs = args.jobs or (300 if args.quick else 5_000)
    latency_jobs = args.latency_jobs or (100 if args.quick else 1_000)
    budget_s = 30.0 if args.quick else 150.0
    return Sizes(jobs, latency_jobs, 2 * jobs, budget_s), args.naive_loop


def revision() -> str:
    """The commit measured, marked dirty when the tree has changes."""
    described = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or "unknown"


def main() -> None:
    """Run the benchmark (or, in a child process, one naive loop)."""
    if "--leased-loop" in sys.argv:
        leased_loop(sys.argv[sys.argv.index("--leased-loop") + 1])
        return
    sizes, naive_url = parse_sizes()
    if naive_url is not None:
        naive_loop(naive_url)
        return
    say(f"Ronin job queue benchmark, revision {revision()} ({sizes.jobs:,} jobs per run)")
    asyncio.run(run(sizes))


if __name__ == "__main__":
    main()

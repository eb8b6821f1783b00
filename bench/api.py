"""Benchmark the HTTP API: ``ronin serve`` under wrk, next to a bare ASGI handler.

Usage: ``python -m bench.api [--quick] [--rows N] [--seconds S] [--connections C]`` from the
repository root.

A scratch database on ``RONIN_DATABASE_URL`` (or on an embedded server of the benchmark's own)
is seeded with the map benchmark's synthetic services (100,000; ``--quick``: 5,000) and dropped
at the end. Two servers run as subprocesses on 127.0.0.1: ``ronin serve --workers 0`` on that
database (the API alone: no job is ever run, no packet leaves loopback), and the baseline, a
plain ASGI callable answering every request with a fixed JSON body (a first page of Ronin's
own, byte for byte), served by uvicorn with the options ``ronin serve`` uses. wrk (1 thread,
keep-alive) measures requests/s and latency of the baseline, of a first page of
``GET /v1/services`` for a capability thousands of services hold (with the micro-cache and
without), of ``POST /v1/jobs`` (32 connections), of ``POST /v1/jobs/batch`` with 1,000
distinct jobs a request (4 connections; jobs/s accepted), and of ``POST /v1/jobs`` at one
connection, grouped (no key) and written alone (a fresh ``Idempotency-Key`` each), whose
p50s say whether grouping costs a quiet node anything. The queue-depth cap
(RONIN_MAX_PENDING_JOBS) is off: the batch run queues a few hundred thousand jobs. With two
CPUs or more, the servers run on one and wrk on another. The command exits 0 whether
or not a goal is met and prints PASS or MISS for each goal; it fails (exit 1) if wrk saw error
answers or more than a handful of socket errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

from bench.api_support import Served, WrkRun, run_wrk, server_process, wrk_script
from bench.harness import (
    BenchError,
    CpuMeter,
    connect,
    fetch_value,
    load_average,
    log_tail,
    ronin_env,
    run_benchmark,
    say,
    scratch_database,
    server_facts,
    server_url,
    verdict_line,
)
from bench.map import CAPABILITY_FREQUENCIES, closest, copy_rows, vacuum_analyze

PAGE = 50
CAPABILITY_SHARE = 0.05  # the capability asked for: held by about 1 service in 20
JOB_BODY = (
    b'{"target":{"type":"network_cidr","value":"127.0.0.1/32"},"protocols":["http-api"],"depth":1}'
)
RATIO_GOAL = 3.0
P99_GOAL_MS = 25.0  # POST /v1/jobs at full load
BULK_GOAL_JOBS_S = 20_000.0  # POST /v1/jobs/batch
LOW_LOAD_TOLERANCE = 1.10  # grouped p50 at one connection, at most this times ungrouped's
BATCH_JOBS = 1000
#: A full batch of distinct jobs (a /32 each, as a scheduler splitting a range would send).
BATCH_BODY = json.dumps(
    {
        "jobs": [
            {
                "target": {"type": "network_cidr", "value": f"127.1.{i // 256}.{i % 256}/32"},
                "protocols": ["http-api"],
                "depth": 1,
            }
            for i in range(BATCH_JOBS)
        ]
    },
    separators=(",", ":"),
).encode()
SOCKET_ERRORS_TOLERATED = 5
SETTLE_TIMEOUT_S = 10.0
SETTLE_POLL_S = 0.1
SETTLED_S = 1.0
BUSY_SHARE = 0.2  # other work busier than this (of one CPU) during a run skews its figures
JOBS = "SELECT count(*) FROM discovery_jobs"
# With --workers 0 nothing claims a job: any trace of a run means jobs ran (and may have probed).
JOBS_TOUCHED = """
SELECT (SELECT count(*) FROM discovery_jobs WHERE status <> 'pending')
     + (SELECT count(*) FROM discovery_job_attempts)
"""


@dataclass(frozen=True, slots=True)
class Size:
    """How much is seeded and measured."""

    rows: int
    seconds: int
    warmup_seconds: int
    connections: int
    batch_connections: int = 4  # a batch is a thousand jobs: a few in flight saturate


FULL = Size(rows=100_000, seconds=10, warmup_seconds=2, connections=32)
QUICK = Size(rows=5_000, seconds=2, warmup_seconds=1, connections=32)


@dataclass(slots=True)
class Report:
    """Everything the final table prints."""

    capability: str = ""
    holders: int = 0
    bare: WrkRun | None = None
    routes: list[WrkRun] = field(default_factory=list)
    jobs_sent: int = 0
    jobs_answered: int = 0
    jobs_stored: int = 0
    #: The batch run, and the jobs it stored.
    batch: WrkRun | None = None
    batch_jobs_stored: int = 0
    #: One connection: submissions grouped (no key) and written alone (a key each).
    low_load: WrkRun | None = None
    low_load_alone: WrkRun | None = None
    #: The runs during which other work kept the machine busy.
    skewed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- The machine and the database ------------------------------------------------------------


def cpu_plan() -> tuple[int | None, int | None, str]:
    """The CPU of the servers and the CPU of wrk (None: not pinned), and how it was decided."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"{len(cpus)} CPU: servers and wrk share it"
    if shutil.which("taskset") is None:
        return None, None, "taskset not found: servers and wrk not pinned"
    return cpus[0], cpus[1], f"servers on CPU {cpus[0]}, wrk on CPU {cpus[1]}"


def wrk_version() -> str:
    """wrk's own version line."""
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0].strip() if done.stdout else "unknown"


async def seed(url: str, rows: int, report: Report) -> None:
    """The map benchmark's first ``rows`` services (seed 1), and the capability to ask for."""
    say(f"seeding {rows:,} services (COPY) ...")
    loaded = await copy_rows(url, 1, rows, datetime.now(UTC) - timedelta(minutes=5))
    # The map's tables only: statistics taken of the job tables while they are empty would
    # hold until autovacuum's next look (a minute), and PostgreSQL would plan each job's
    # foreign-key check as a scan of a table it believes empty, as it grows by thousands.
    seconds = await vacuum_analyze(url, "discovered_services")
    say(f"  {loaded.rate:,.0f} rows/s; VACUUM ANALYZE discovered_services {seconds:.1f} s")
    say(f"  {await checkpoint(url)}")
    async with await connect(url) as conn:
        cur = await conn.execute(CAPABILITY_FREQUENCIES)
        counts = {name: int(n) for name, n in await cur.fetchall()}
    share = {name: count / rows for name, count in counts.items()}
    report.capability = closest(share, CAPABILITY_SHARE, ())
    report.holders = counts[report.capability]
    if report.holders < PAGE:
        raise BenchError(f"{report.capability} is held by {report.holders} services only")
    say(f"  asking for {report.capability}: held by {report.holders:,} services")


async def checkpoint(url: str) -> str:
    """CHECKPOINT, as pgbench does after loading: the seed's writes are flushed now, not by a
    checkpoint that lands in a measured run (one full run without it: POST /v1/jobs p99 32 ms;
    the next, with it: 4.5 ms)."""
    started = time.perf_counter()
    try:
        async with await connect(url) as conn:
            await conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        return f"CHECKPOINT refused ({str(exc).strip()}): the seed may be flushed during a run"
    return f"CHECKPOINT {time.perf_counter() - started:.1f} s"


# --- Ronin and the baseline ------------------------------------------------------------------


def http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request (a POST of JSON if ``body`` is given), never through a proxy: its status
    and body, whatever the status."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        raise BenchError(f"{url}: {exc}") from exc


async def check_ronin(base: str, capability: str) -> bytes:
    """A first page (full) and a job submission (202) answered as expected; the page."""
    status, page = await asyncio.to_thread(http, f"{base}{services_path(capability)}")
    items = json.loads(page).get("items", []) if status == 200 else []
    if status != 200 or len(items) != PAGE:
        raise BenchError(f"GET first page: {status} with {len(items)} items, not 200 with {PAGE}")
    status, job = await asyncio.to_thread(http, f"{base}/v1/jobs", JOB_BODY)
    if status != 202:
        raise BenchError(f"POST /v1/jobs answered {status}, not 202: {job[:500]!r}")
    return page


def services_path(capability: str) -> str:
    """The first page measured."""
    return f"/v1/services?capability={capability}&limit={PAGE}"


def check_run(run: WrkRun, served: Served) -> None:
    """Fail loudly if wrk saw error answers or more than a handful of socket errors."""
    errors = sum(run.socket_errors.values())
    if run.requests == 0 or run.bad_status or errors > SOCKET_ERRORS_TOLERATED:
        raise BenchError(
            f"{run.label}: {run.requests:,} answers, {run.bad_status:,} with a status >= 400,"
            f" socket errors: {run.describe_errors()}\nwrk said:\n{run.output}\n"
            f"{served.name}'s log:\n{log_tail(served.log)}"
        )


async def measured_run(
    label: str,
    url: str,
    served: Served,
    size: Size,
    report: Report,
    *,
    script: Path,
    cpu: int | None,
    database: str,
    between: Callable[[], Awaitable[None]] | None = None,
    connections: int | None = None,
) -> WrkRun:
    """A warm-up run, then the measured one with the CPU used meanwhile by the server, by
    PostgreSQL (when it runs on this machine), by wrk and by anything else; fails loudly on
    errors. ``between`` runs after the warm-up; ``connections``: wrk's, if not the size's."""
    connections = connections or size.connections
    say(f"wrk: {label} ({size.warmup_seconds} s warm-up, {size.seconds} s) ...")
    warmup = await run_wrk(
        f"{label} (warm-up)",
        url,
        script=script,
        connections=connections,
        seconds=size.warmup_seconds,
        cpu=cpu,
    )
    check_run(warmup, served)
    if between is not None:
        await between()
    postgres = await postgres_pids(database)
    meter = CpuMeter([served.pid, *postgres])
    run = await run_wrk(
        label, url, script=script, connections=connections, seconds=size.seconds, cpu=cpu
    )
    usage = meter.stop()
    machine = usage.machine_s
    server_s, database_s = usage.of([served.pid]), usage.of(postgres)
    wrk_s = usage.children.total_s  # wrk is the only child reaped meanwhile
    run = replace(
        run,
        server_cpu_s=server_s,
        database_cpu_s=database_s if postgres else None,
        wrk_cpu_s=wrk_s,
        other_cpu_s=max(0.0, machine - server_s - database_s - wrk_s),
    )
    check_run(run, served)
    say(
        f"  {run.rate:,.0f} requests/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms;"
        f" CPU: server {run.cpu_share(run.server_cpu_s)},"
        f" PostgreSQL {run.cpu_share(run.database_cpu_s)}, wrk {run.cpu_share(run.wrk_cpu_s)},"
        f" anything else {run.cpu_share(run.other_cpu_s)}; socket errors: {run.describe_errors()}"
    )
    if run.other_cpu_s / run.seconds > BUSY_SHARE:
        report.skewed.append(run.label)
        say("  WARNING: something else kept the machine busy: this run's figures are skewed")
    return run


async def postgres_pids(url: str) -> list[int]:
    """Every process of the PostgreSQL server (its postmaster and the postmaster's children)
    when it runs on this machine; none otherwise."""
    async with await connect(url) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        try:  # while the backend is still there
            postmaster = psutil.Process(int(row[0])).parent()
            if postmaster is None or "postgres" not in postmaster.name():
                return []
            return [postmaster.pid, *(child.pid for child in postmaster.children())]
        except psutil.Error:
            return []


async def settled_jobs(url: str) -> int:
    """The jobs table's count once it has not changed for a second."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last, stable_since = int(await fetch_value(url, JOBS)), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < SETTLED_S:
        await asyncio.sleep(SETTLE_POLL_S)
        count = int(await fetch_value(url, JOBS))
        if count != last:
            last, stable_since = count, time.monotonic()
    return last


async def run_counting_jobs(
    label: str,
    path: str,
    ronin: Served,
    url: str,
    size: Size,
    report: Report,
    *,
    script: Path,
    cpu: int | None,
    connections: int | None = None,
) -> tuple[WrkRun, int]:
    """A measured run of ``path``, and the jobs it stored (counted once the warm-up's last
    requests are in, and again once the run's are)."""
    before = 0

    async def count_before() -> None:
        nonlocal before
        before = await settled_jobs(url)

    run = await measured_run(
        label,
        f"http://127.0.0.1:{ronin.port}{path}",
        ronin,
        size,
        report,
        script=script,
        cpu=cpu,
        database=url,
        between=count_before,
        connections=connections,
    )
    return run, await settled_jobs(url) - before


async def measure_jobs(
    url: str, ronin: Served, script: Path, size: Size, cpu: int | None, report: Report
) -> WrkRun:
    """The POST run, and the jobs it stored: one per request the server read."""
    run, report.jobs_stored = await run_counting_jobs(
        "POST /v1/jobs", "/v1/jobs", ronin, url, size, report, script=script, cpu=cpu
    )
    report.jobs_sent = run.sent
    report.jobs_answered = run.answered_ok
    if await fetch_value(url, JOBS_TOUCHED):
        raise BenchError("jobs were claimed although ronin serve ran with --workers 0")
    return run


async def measure_batches(
    url: str, ronin: Served, script: Path, size: Size, cpu: int | None, report: Report
) -> None:
    """The batch run: a thousand distinct jobs a request, a few requests in flight."""
    report.batch, report.batch_jobs_stored = await run_counting_jobs(
        f"POST /v1/jobs/batch ({BATCH_JOBS:,} jobs)",
        "/v1/jobs/batch",
        ronin,
        url,
        size,
        report,
        script=script,
        cpu=cpu,
        connections=size.batch_connections,
    )


async def measure_low_load(
    url: str, ronin: Served, scripts: tuple[Path, Path], size: Size, cpu: int | None, report: Report
) -> None:
    """One connection, one request at a time: grouped submissions (no key: the group-commit
    path, alone in its group), then each with a key of its own (written alone, no group)."""
    grouped, alone = scripts
    target = f"http://127.0.0.1:{ronin.port}/v1/jobs"
    common = {"script": grouped, "cpu": cpu, "database": url, "connections": 1}
    report.low_load = await measured_run(
        "POST /v1/jobs, 1 connection", target, ronin, size, report, **common
    )
    common["script"] = alone
    report.low_load_alone = await measured_run(
        "POST /v1/jobs, 1 connection, a key each", target, ronin, size, report, **common
    )


async def benchmark(server: str, size: Size, report: Report, workdir: Path) -> None:
    """Seed, start both servers, measure; both stop and the database goes, whatever happens."""
    server_cpu, wrk_cpu, plan = cpu_plan()
    say(f"CPUs: {plan}; PostgreSQL not pinned")
    get_script, post_script = workdir / "get.lua", workdir / "post.lua"
    batch_script, keyed_script = workdir / "batch.lua", workdir / "keyed.lua"
    get_script.write_text(wrk_script(None))
    post_script.write_text(wrk_script(JOB_BODY))
    batch_script.write_text(wrk_script(BATCH_BODY))
    keyed_script.write_text(wrk_script(JOB_BODY, keyed=True))
    async with scratch_database(server, "ronin_bench_api") as url:
        await seed(url, size.rows, report)
        ronin_command = [sys.executable, "-m", "ronin", "serve"]
        ronin_command += ["--host", "127.0.0.1", "--port", "0", "--workers", "0"]
        ronin_log, bare_log = workdir / "ronin.log", workdir / "bare.log"
        # No cap on the queue's depth: the batch run queues a few hundred thousand jobs (the
        # 429 above RONIN_MAX_PENDING_JOBS has its own tests).
        uncapped = ronin_env(url) | {"RONIN_MAX_PENDING_JOBS": "0"}
        async with server_process(
            "ronin serve", ronin_command, uncapped, ronin_log, server_cpu
        ) as ronin:
            say(f"ronin serve (pid {ronin.pid}) listening on 127.0.0.1:{ronin.port}")
            page = await check_ronin(f"http://127.0.0.1:{ronin.port}", report.capability)
            body_file = workdir / "page.json"
            body_file.write_bytes(page)
            bare_command = [sys.executable, "-m", "bench.api_support", "bare", str(body_file)]
            async with server_process(
                "bare handler", bare_command, dict(os.environ), bare_log, server_cpu
            ) as bare:
                say(f"bare handler (pid {bare.pid}) listening on 127.0.0.1:{bare.port}")
                report.bare = await measured_run(
                    f"bare ASGI handler ({len(page):,} B)",
                    f"http://127.0.0.1:{bare.port}/",
                    bare,
                    size,
                    report,
                    script=get_script,
                    cpu=wrk_cpu,
                    database=url,
                )
            path = services_path(report.capability)
            get = await measured_run(
                f"GET {path}",
                f"http://127.0.0.1:{ronin.port}{path}",
                ronin,
                size,
                report,
                script=get_script,
                cpu=wrk_cpu,
                database=url,
            )
            report.routes.append(get)
            report.routes.append(await measure_jobs(url, ronin, post_script, size, wrk_cpu, report))
        # The same read with the micro-cache off: every request goes to PostgreSQL.
        uncached_env = uncapped | {"RONIN_API_CACHE_S": "0"}
        async with server_process(
            "ronin serve (cache off)", ronin_command, uncached_env, workdir / "nc.log", server_cpu
        ) as uncached:
            report.routes.append(
                await measured_run(
                    f"GET (cache off) {path}",
                    f"http://127.0.0.1:{uncached.port}{path}",
                    uncached,
                    size,
                    report,
                    script=get_script,
                    cpu=wrk_cpu,
                    database=url,
                )
            )
        # Last, as they queue the most jobs (the autovacuum that follows would weigh on the
        # runs after them): batches, then one connection grouped and alone.
        async with server_process(
            "ronin serve (jobs)", ronin_command, uncapped, workdir / "jobs.log", server_cpu
        ) as writer:
            await measure_batches(url, writer, batch_script, size, wrk_cpu, report)
            scripts = (post_script, keyed_script)
            await measure_low_load(url, writer, scripts, size, wrk_cpu, report)
        for served in (ronin, bare, uncached, writer):
            if served.exit_code != 0:
                report.notes.append(
                    f"{served.name} exited {served.exit_code} on SIGTERM:\n{log_tail(served.log)}"
                )


# --- The table -------------------------------------------------------------------------------


def print_report(report: Report, size: Size) -> None:
    """The table, then each goal with PASS or MISS."""
    assert report.bare is not None
    bare = report.bare
    say("")
    say(
        f"wrk: 1 thread, {size.connections} connections, {size.seconds} s per run after a"
        f" {size.warmup_seconds} s warm-up; {size.rows:,} services, {report.capability} held"
        f" by {report.holders:,}"
    )
    head = f"{'endpoint':<46}{'requests/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
    say(f"{head}{'CPU srv':>8}{'CPU db':>8}{'bare/x':>8}")
    extra = [r for r in (report.batch, report.low_load, report.low_load_alone) if r is not None]
    for run in [bare, *report.routes, *extra]:
        say(
            f"{run.label[:45]:<46}{run.rate:>11,.0f}{run.p50_ms:>8.2f}{run.p99_ms:>8.2f}"
            f"{run.max_ms:>8.1f}{run.cpu_share(run.server_cpu_s):>8}"
            f"{run.cpu_share(run.database_cpu_s):>8}{bare.rate / run.rate:>8.2f}"
        )
    say(
        "(CPU during the run, 100% being one CPU all along: srv, the server process; db, every"
        " process of PostgreSQL)"
    )
    in_flight = report.jobs_sent - report.jobs_answered
    say(
        f"POST /v1/jobs: {report.jobs_sent:,} requests sent, {report.jobs_answered:,} answered"
        f" without error before wrk stopped ({in_flight} in flight then),"
        f" {report.jobs_stored:,} jobs stored"
    )
    say("")
    for run in report.routes:
        ratio = bare.rate / run.rate
        goal = f"{run.label}: bare/ronin {ratio:.2f}x requests/s (goal <= {RATIO_GOAL:.0f}x)"
        say(verdict_line(ratio <= RATIO_GOAL, goal))
    # A request in flight when wrk stopped is stored if the server read it before wrk closed
    # the connection, so: answered <= stored <= sent, and at most one in flight per connection.
    stored_once = (
        report.jobs_answered <= report.jobs_stored <= report.jobs_sent
        and in_flight <= size.connections
    )
    stored = (
        f"every 202 stored once: {report.jobs_answered:,} answered <="
        f" {report.jobs_stored:,} stored <= {report.jobs_sent:,} sent"
    )
    say(verdict_line(stored_once, stored))
    post = next((run for run in report.routes if run.label == "POST /v1/jobs"), None)
    if post is not None:
        goal = (
            f"POST /v1/jobs at {size.connections} connections: p99 {post.p99_ms:.2f} ms"
            f" (goal <= {P99_GOAL_MS:.0f} ms)"
        )
        say(verdict_line(post.p99_ms <= P99_GOAL_MS, goal))
        say(cpu_budget(post, bare))
    if report.batch is not None:
        batch = report.batch
        jobs_s = batch.rate * BATCH_JOBS
        goal = (
            f"POST /v1/jobs/batch: {jobs_s:,.0f} jobs/s accepted ({batch.rate:,.1f} batches/s of"
            f" {BATCH_JOBS:,} distinct jobs, {size.batch_connections} connections, p50"
            f" {batch.p50_ms:.1f} ms; {report.batch_jobs_stored:,} jobs stored) (goal >="
            f" {BULK_GOAL_JOBS_S:,.0f})"
        )
        say(verdict_line(jobs_s >= BULK_GOAL_JOBS_S, goal))
    if report.low_load is not None and report.low_load_alone is not None:
        grouped, alone = report.low_load, report.low_load_alone
        ratio = grouped.p50_ms / alone.p50_ms
        goal = (
            f"one connection: p50 {grouped.p50_ms:.2f} ms grouped vs {alone.p50_ms:.2f} ms with a"
            f" key each (written alone) = {ratio:.2f}x (goal: grouping adds nothing, <="
            f" {LOW_LOAD_TOLERANCE:.2f}x)"
        )
        say(verdict_line(ratio <= LOW_LOAD_TOLERANCE, goal))
    for note in report.notes:
        say(f"NOTE {note}")
    if report.skewed:
        say(
            f"WARNING: other work kept the machine busy (> {BUSY_SHARE:.0%} of a CPU) during: "
            f"{'; '.join(report.skewed)}; those figures are skewed"
        )


def cpu_budget(post: WrkRun, bare: WrkRun) -> str:
    """What ``post`` cost in CPU a request, and what its goal's rate would cost at that price:
    whether the ratio goal fits this machine at all."""

    def each(seconds: float | None, run: WrkRun) -> float:
        return (seconds or 0.0) / max(run.requests, 1) * 1e6

    server, database, wrk = (
        each(post.server_cpu_s, post),
        each(post.database_cpu_s, post),
        each(post.wrk_cpu_s, post),
    )
    bare_server = each(bare.server_cpu_s, bare)
    goal_rate = bare.rate / RATIO_GOAL
    machine = (server + database + wrk) * goal_rate / 1e6
    return (
        f"  CPU a request: server {server:.1f} µs, PostgreSQL {database:.1f} µs, wrk {wrk:.1f} µs;"
        f" bare handler: server {bare_server:.1f} µs, wrk {each(bare.wrk_cpu_s, bare):.1f} µs"
        f" (server {server / bare_server:.2f}x). At the ratio goal's {goal_rate:,.0f}"
        f" requests/s, Ronin's server would need {server * goal_rate / 1e6:.0%} of its CPU,"
        f" and the three {machine:.2f} of the machine's {len(os.sched_getaffinity(0))} CPUs"
    )


async def run(size: Size) -> None:
    """Benchmark, then the table."""
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    say(
        f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {platform.platform()},"
        f" Python {platform.python_version()}; {wrk_version()}"
    )
    say(f"at the start: {load_average()}")
    server, origin = server_url("api")
    say(f"server: {await server_facts(server)} [{origin}]")
    report, started = Report(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ronin-bench-api-") as workdir:
        await benchmark(server, size, report, Path(workdir))
    print_report(report, size)
    say(f"wall time of the benchmark: {time.monotonic() - started:.0f} s; {load_average()}")


def parse_size(argv: list[str]) -> Size:
    """--quick, and overrides of its sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.api", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small size (what CI runs)")
    parser.add_argument("--rows", type=int, help="services seeded (100,000; quick 5,000)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (10; quick 2)")
    parser.add_argument("--connections", type=int, help="wrk connections (32)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    size = Size(
        rows=args.rows or size.rows,
        seconds=args.seconds or size.seconds,
        warmup_seconds=size.warmup_seconds,
        connections=args.connections or size.connections,
    )
    if size.rows < PAGE or size.seconds < 1 or size.connections < 1:
        parser.error(f"--rows must be at least {PAGE}, --seconds and --connections at least 1")
    return size


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    size = parse_size(sys.argv[1:] if argv is None else argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    return run_benchmark(run(size))


if __name__ == "__main__":
    sys.exit(main())

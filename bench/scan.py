"""Benchmark network discovery: ``ronin discover`` over loopback ranges, next to nmap.

Usage: ``python -m bench.scan [--quick]`` from the repository root, as root (two scenarios
run in network namespaces with iptables rules).

Three scenarios, Ronin always run as the real command (the ``ronin`` console script) in a
subprocess, whole process against whole process:

1. full sweep: beacons over 127.50.0.0/16, served by a separate process; ``ronin discover
   --wait --rate 0 --concurrency 2048`` and ``nmap -n -Pn -sT -p 30437 --open -T5`` over the
   same range, in turn, five runs each (three with ``--quick``): the medians of their wall
   and CPU times, and their ratios. Each Ronin run has an embedded data directory of its own,
   copied from one made and migrated beforehand, so its PostgreSQL starts and stops within
   the run, as for an operator; the server's CPU counts in Ronin's (the benchmark adopts it:
   ``set_child_subreaper``);
2. silent sweep: a /20 inside a namespace whose iptables drop every SYN to the port, so
   timeouts and concurrency set the pace; the same ``ronin discover``, then ``nmap -sT -T4``
   (stopped at a budget, its whole time then taken from its own progress reports);
3. memory: Ronin over 127.0.0.0/8 (inside a namespace whose iptables count the SYNs) for a
   minute on a scratch database (``RONIN_DATABASE_URL``, or an embedded server of the
   benchmark's own), its memory sampled every second, then stopped with SIGINT.

Traffic goes only to loopback, in this machine's namespace or in namespaces made here and
deleted at the end. The command exits 0 whether or not a goal is met and prints PASS or MISS
for each goal; ``--quick`` runs a small size (what CI runs).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    MIB,
    BenchError,
    fetch_row,
    load_average,
    ronin_env,
    run_benchmark,
    say,
    server_url,
    verdict,
)
from bench.scan_support import (
    Measured,
    NmapRun,
    beacon_process,
    delete_stale_namespaces,
    in_namespace,
    machine_facts,
    measure,
    network_namespace,
    packets_counted,
    raise_fd_limit,
    run_nmap,
    scratch_database,
    set_child_subreaper,
)
from ronin.discovery.syn_sweep import syn_permitted

PORT = 30437
FD_LIMIT = 16_384
SPEED_GOAL = 1.0  # full sweep: Ronin's median whole process / nmap's, at most
SILENT_GOAL = 0.02  # silent sweep: Ronin's whole process / nmap's, at most (50x faster)
MEMORY_GOAL_MIB = 200.0
FLAT_GROWTH = 0.10  # memory is flat when the last window's mean is within 10% of the first's
PROBED = re.compile(r"(\d+) probed")
JOB_STATE = """
SELECT j.status, s.progress_message, s.checkpoint
FROM discovery_jobs j JOIN discovery_job_state s USING (job_id)
"""
DROP_SYNS = ("-A", "INPUT", "-i", "lo", "-p", "tcp", "--syn", "--dport", str(PORT), "-j", "DROP")
COUNT_SYNS = ("-A", "INPUT", "-i", "lo", "-p", "tcp", "--syn", "--dport", str(PORT))


@dataclass(frozen=True, slots=True)
class Size:
    """How big each scenario is, and how long anything may take."""

    sweep_network: str
    beacons: int
    sweep_concurrency: int  # both sweeps: ronin discover --concurrency
    repeats: int  # full sweep: runs of Ronin and of nmap, in turn
    silent_network: str
    nmap_budget_s: float  # silent sweep: nmap is stopped after this long
    memory_s: float
    memory_concurrency: int
    run_timeout_s: float  # a discover run still going after this long is stopped


FULL = Size("127.50.0.0/16", 256, 2048, 5, "127.60.0.0/20", 60, 60, 4096, 120)
QUICK = Size("127.50.0.0/20", 16, 2048, 3, "127.60.0.0/24", 8, 10, 1024, 30)
MEMORY_NETWORK = "127.0.0.0/8"


@dataclass(slots=True)
class Row:
    """One line of the summary table."""

    scenario: str
    tool: str
    job_s: float | None
    wall_s: float
    probed: int
    found: int
    services: int | None = None
    rss_mib: float | None = None
    tree_rss_mib: float | None = None

    @property
    def seconds(self) -> float:
        """The job's own time when known, else the process's."""
        return self.job_s if self.job_s is not None else self.wall_s

    @property
    def rate(self) -> float:
        """Addresses per second."""
        return self.probed / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class Report:
    """Everything the summary prints."""

    rows: list[Row] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- Running Ronin ---------------------------------------------------------------------------


def ronin_command() -> list[str]:
    """The ``ronin`` console script beside this interpreter (what an operator runs, not a
    shell shim in front of it), else ``python -m ronin``."""
    script = Path(sys.executable).with_name("ronin")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ronin"]


def discover_command(cidr: str, concurrency: int) -> list[str]:
    """``ronin discover``, unthrottled, waiting, printing the job as JSON."""
    return [
        *ronin_command(),
        *("discover", cidr, "--wait", "--json", "--rate", "0", "--concurrency", str(concurrency)),
        *("--port", str(PORT)),
    ]


def nmap_command(cidr: str, timing: str) -> list[str]:
    """The nmap connect sweep of the port (as ``run_nmap`` runs it, but its progress reports)."""
    return ["nmap", "-n", "-Pn", "-sT", "-p", str(PORT), "--open", timing, cidr]


def discover_env(url: str, allow: str, **extra: str) -> dict[str, str]:
    """The environment of a discover run: this database, this range, no other RONIN_*."""
    return ronin_env(url, RONIN_ALLOW=allow, **extra)


def job_seconds(job: dict[str, Any]) -> float | None:
    """The job's own time, from its creation to its completion."""
    if not job.get("completed_at"):
        return None
    created = datetime.fromisoformat(job["created_at"])
    return (datetime.fromisoformat(job["completed_at"]) - created).total_seconds()


def phases(job: dict[str, Any], measured: Measured) -> str:
    """Where the process's time went: start-up, queued, running, exit (job timestamps)."""
    keys = ("created_at", "started_at", "completed_at")
    if not all(job.get(key) for key in keys):
        return "no job timestamps"
    created, started, completed = (datetime.fromisoformat(job[key]).timestamp() for key in keys)
    return (
        f"start-up {created - measured.started_at:.2f} s, queued {started - created:.2f} s, "
        f"running {completed - started:.2f} s, exit {measured.ended_at - completed:.2f} s; "
        f"CPU {measured.cpu_user_s:.2f} s user + {measured.cpu_system_s:.2f} s system: "
        f"{cpu_split(measured)}"
    )


def cpu_split(measured: Measured) -> str:
    """CPU seconds of the discover process, of each of its children (sweep processes), and
    of the rest: what they waited for unseen (pg_ctl) and the server the benchmark adopted."""
    children = " + ".join(f"{cpu:.2f}" for cpu in measured.children_cpu_s) or "none"
    total = measured.cpu_user_s + measured.cpu_system_s
    rest = total - measured.own_cpu_s - sum(measured.children_cpu_s)
    return (
        f"discover process {measured.own_cpu_s:.2f} s, children {children} s, "
        f"the rest (pg_ctl, the embedded server) {max(0.0, rest):.2f} s"
    )


def final_job(measured: Measured) -> dict[str, Any]:
    """The job as the command printed it (empty if it printed none)."""
    try:
        job: dict[str, Any] = json.loads(measured.stdout)
    except ValueError:
        return {}
    return job


def last_progress(measured: Measured) -> str:
    """The last progress line the command printed."""
    lines = [line.strip() for line in measured.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "(none)"


def describe(row: Row) -> str:
    """A run in one line."""
    job = f"{row.job_s:.2f} s job" if row.job_s is not None else "no job time"
    return (
        f"{job}, {row.wall_s:.2f} s process, {row.probed:,} probed ({row.rate:,.0f}/s), "
        f"{row.found} found, {row.services} services, peak RSS {row.rss_mib or 0:.0f} MiB "
        f"(with children {row.tree_rss_mib or 0:.0f})"
    )


def check_run(report: Report, row: Row, job: dict[str, Any], measured: Measured) -> None:
    """Notes for a run that did not complete, was stopped, or had probes fail."""
    where = f"{row.scenario} {row.tool}"
    failed = (job.get("result") or {}).get("failed_probes", {})
    if failed:
        report.notes.append(f"{where}: failed probes {failed}")
    if measured.stopped_at_s is not None:
        report.notes.append(
            f"{where}: still running after {measured.stopped_at_s:.0f} s, stopped (exit "
            f"{measured.exit_code}); its last progress line: {last_progress(measured)!r}"
        )
        say(f"  stack of the stuck run:\n{measured.stack_dump}")
    elif job.get("status") != "completed":
        report.notes.append(
            f"{where}: exit {measured.exit_code}, job {job.get('status')}, {job.get('error')}; "
            f"stderr ends {measured.stderr[-300:]!r}"
        )


# --- Scenario 1: the full sweep, whole process against whole process ----------------------


@dataclass(frozen=True, slots=True)
class Whole:
    """One command run whole: its wall time, all the CPU it cost, and what it found."""

    wall_s: float
    cpu_s: float
    found: int


async def full_sweep(size: Size, report: Report) -> None:
    """Beacons over a range; ``ronin discover --wait`` on an embedded database of its own and
    ``nmap -sT -T5``, run in turn, ``size.repeats`` times each; medians of wall and CPU."""
    cidr, scenario = size.sweep_network, f"1 full {size.sweep_network}"
    command = discover_command(cidr, size.sweep_concurrency)
    say(f"scenario 1: {size.beacons} beacons over {cidr}, port {PORT}, served by another process")
    say(f"  Ronin: {' '.join(command)}")
    say(f"  nmap:  {' '.join(nmap_command(cidr, '-T5'))}")
    say("  each Ronin run on a copy of a made, migrated and stopped embedded data directory:")
    say("  its PostgreSQL starts and stops inside the run, as for an operator")
    ronin: list[Whole] = []
    connect: list[Whole] = []
    nmap: list[Whole] = []
    async with beacon_process(cidr, size.beacons, PORT), embedded_template() as template:
        for _ in range(size.repeats):
            ronin.append(await whole_ronin_run(template, cidr, size, report, scenario))
            connect.append(
                await whole_ronin_run(template, cidr, size, report, scenario, connect=True)
            )
            nmap.append(await whole_nmap_run(cidr, size))
    method = "syn" if syn_permitted() else "connect"
    rows = [(f"ronin ({method})", ronin), ("ronin connect", connect), ("nmap -T5", nmap)]
    for tool, runs in rows:
        wall, cpu = median_of(runs)
        say(
            f"  {tool}: median wall {wall:.3f} s, CPU {cpu:.3f} s; walls "
            + " ".join(f"{run.wall_s:.2f}" for run in runs)
        )
        report.rows.append(
            Row(scenario, tool, None, wall, 2 ** (32 - int(cidr.split("/")[1])), runs[0].found)
        )
    report.goals.append(speed_goal(ronin, nmap, size.beacons, f"RONIN_SWEEP_METHOD=auto: {method}"))
    report.goals.append(
        speed_goal(connect, nmap, size.beacons, "RONIN_SWEEP_METHOD=connect: no raw socket")
    )


def median_of(runs: list[Whole]) -> tuple[float, float]:
    """The median wall time and the median CPU time of ``runs``."""
    return statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs)


@asynccontextmanager
async def embedded_template() -> AsyncIterator[Path]:
    """A data directory whose embedded cluster ``ronin db migrate`` made and migrated (then
    stopped, at its exit), for each run to copy; removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="ronin-bench-scan-"))
    try:
        template = directory / "template"
        made = await measure(
            [*ronin_command(), "db", "migrate"],
            env=embedded_env(template, "127.0.0.1/32"),
            stop_after_s=120,
        )
        if made.exit_code != 0:
            raise BenchError(f"ronin db migrate exited {made.exit_code}: {made.stderr[-500:]}")
        yield template
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def embedded_env(data_dir: Path, allow: str) -> dict[str, str]:
    """A run on the embedded server in ``data_dir``: no RONIN_* setting but these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RONIN_")}
    return env | {"RONIN_DATA_DIR": str(data_dir), "RONIN_ALLOW": allow}


async def whole_ronin_run(
    template: Path,
    cidr: str,
    size: Size,
    report: Report,
    scenario: str,
    namespace: str | None = None,
    *,
    connect: bool = False,
) -> Whole:
    """``ronin discover --wait`` on a fresh copy of the template (in ``namespace`` if one is
    given; with RONIN_SWEEP_METHOD=connect if ``connect``), the CPU of its server counted
    with its own."""
    data_dir = template.with_name(f"run-{time.monotonic_ns()}")
    await asyncio.to_thread(copy_data_dir, template, data_dir)
    try:
        measured = await measure(
            in_namespace(namespace, discover_command(cidr, size.sweep_concurrency)),
            env=embedded_env(data_dir, cidr)
            | ({"RONIN_SWEEP_METHOD": "connect"} if connect else {}),
            stop_after_s=size.run_timeout_s,
            dump_stacks=True,
            adopt_orphans=True,
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    job = final_job(measured)
    stats = (job.get("result") or {}).get("stats", {})
    services = (job.get("result") or {}).get("services") or {}
    row = Row(
        scenario=scenario,
        tool="ronin connect" if connect else "ronin",
        job_s=job_seconds(job),
        wall_s=measured.wall_s,
        probed=int(stats.get("hosts_probed", 0)),
        found=int(stats.get("nodes", 0)),
        services=int(services.get("new", 0)) + int(services.get("refreshed", 0)),
        rss_mib=measured.peak_rss / MIB,
        tree_rss_mib=measured.peak_tree_rss / MIB,
    )
    check_run(report, row, job, measured)
    if measured.orphans_running:
        report.notes.append(
            f"{scenario}: processes left running by a run: {measured.orphans_running}"
        )
    cpu = measured.cpu_user_s + measured.cpu_system_s
    say(f"  {row.tool}: {measured.wall_s:.3f} s wall, {cpu:.3f} s CPU; {describe(row)}")
    say(f"    {phases(job, measured)}")
    return Whole(measured.wall_s, cpu, row.found)


def copy_data_dir(template: Path, copy: Path) -> None:
    """``cp -a``: the cluster's owner (``embedded_postgres`` under root) is kept, as it must."""
    subprocess.run(["cp", "-a", str(template), str(copy)], check=True, timeout=120)


async def whole_nmap_run(cidr: str, size: Size) -> Whole:
    run = await nmap_sweep(cidr, "-T5", size.run_timeout_s)
    cpu = run.cpu_user_s + run.cpu_system_s
    return Whole(run.wall_s, cpu, run.open_ports)


def speed_goal(ronin: list[Whole], nmap: list[Whole], beacons: int, how: str) -> str:
    """PASS or MISS for the full sweep: every node found in every run, and the median whole
    ``ronin discover`` no slower than the median whole nmap."""
    goal = (
        f"full sweep ({how}): ronin discover finds all {beacons} nodes no slower than nmap -sT "
        "-T5, whole process against whole process, medians (goal <= 1.0x)"
    )
    missed = [run.found for run in ronin if run.found != beacons]
    (wall, cpu), (nmap_wall, nmap_cpu) = median_of(ronin), median_of(nmap)
    ratio = wall / nmap_wall
    figures = (
        f"ronin {wall:.3f} s wall, {cpu:.3f} s CPU vs nmap {nmap_wall:.3f} s wall, "
        f"{nmap_cpu:.3f} s CPU = {ratio:.2f}x wall, {cpu / nmap_cpu:.2f}x CPU "
        f"(medians of {len(ronin)} runs each, in turn); nmap saw {nmap[0].found} open"
    )
    if missed:
        return f"MISS {goal}: runs found {missed} nodes; {figures}"
    return f"{verdict(ratio <= SPEED_GOAL)} {goal}: {figures}"


async def nmap_sweep(
    cidr: str, timing: str, budget_s: float, namespace: str | None = None
) -> NmapRun:
    """One nmap run, said as it ends."""
    run = await run_nmap(cidr, PORT, timing, namespace, budget_s)
    if run.finished:
        say(
            f"  nmap -sT {timing}: {run.wall_s:.2f} s, {run.open_ports} open; "
            f"CPU {run.cpu_user_s:.2f} s user + {run.cpu_system_s:.2f} s system"
        )
    else:
        estimate = f"{run.estimated_s:.0f} s" if run.estimated_s else "unknown"
        say(f"  nmap -sT {timing}: stopped after {run.wall_s:.0f} s; its estimate: {estimate}")
    return run


def nmap_row(scenario: str, timing: str, cidr: str, run: NmapRun) -> Row:
    """nmap's row: its wall time (when stopped, its own estimate of the whole run)."""
    seconds = run.wall_s if run.finished else (run.estimated_s or run.wall_s)
    tool = f"nmap {timing}" if run.finished else f"nmap {timing} (est)"
    addresses = 2 ** (32 - int(cidr.split("/")[1]))
    return Row(scenario, tool, None, seconds, addresses, run.open_ports)


# --- Scenario 2: the silent sweep ------------------------------------------------------------


def connect_timeout() -> str:
    """The connect timeout Ronin's crawl gives its sweep (the DiscoveryOptions default)."""
    from ronin.discovery.crawl import DiscoveryOptions

    defaults = {f.name: f.default for f in dataclasses.fields(DiscoveryOptions)}
    return f"{defaults.get('connect_timeout_s', '?')} s"


async def silent_sweep(size: Size, report: Report) -> None:
    """A range where every SYN is dropped: the same whole ``ronin discover``, then nmap -T4."""
    cidr, scenario = size.silent_network, f"2 silent {size.silent_network}"
    say(f"scenario 2: {cidr} in a namespace dropping SYNs to port {PORT}")
    say(f"  Ronin's connect timeout: {connect_timeout()} (DiscoveryOptions.connect_timeout_s)")
    with network_namespace("silent", [DROP_SYNS]) as namespace:
        async with embedded_template() as template:
            ronin = await whole_ronin_run(template, cidr, size, report, scenario, namespace)
        ronin_syns = packets_counted(namespace, PORT)
        nmap = await nmap_sweep(cidr, "-T4", size.nmap_budget_s, namespace)
        nmap_syns = packets_counted(namespace, PORT) - ronin_syns
    addresses = 2 ** (32 - int(cidr.split("/")[1]))
    report.rows.append(Row(scenario, "ronin", None, ronin.wall_s, addresses, ronin.found))
    report.rows.append(nmap_row(scenario, "-T4", cidr, nmap))
    report.notes.append(
        f"{scenario}: SYNs dropped: {ronin_syns:,} from Ronin's run, {nmap_syns:,} from nmap's"
    )
    report.goals.append(silent_goal(ronin, nmap))


def silent_goal(ronin: Whole, nmap: NmapRun) -> str:
    """PASS or MISS for the silent sweep: the whole ``ronin discover`` at least 50x faster
    than nmap -T4.

    A stopped nmap took longer than its budget, so Ronin's time over the budget is an upper
    bound of the ratio; when that bound proves nothing, nmap's own estimate decides.
    """
    goal = (
        f"silent sweep: ronin discover at least {1 / SILENT_GOAL:.0f}x faster than nmap -sT -T4, "
        f"whole processes (goal <= {SILENT_GOAL}x; connect timeout {connect_timeout()})"
    )
    versus = f"ronin {ronin.wall_s:.2f} s wall, {ronin.cpu_s:.2f} s CPU vs nmap"
    if nmap.finished:
        ratio = ronin.wall_s / nmap.wall_s
        return (
            f"{verdict(ratio <= SILENT_GOAL)} {goal}: {versus} {nmap.wall_s:.2f} s = {ratio:.3f}x"
        )
    bound = ronin.wall_s / nmap.wall_s
    estimated = ronin.wall_s / nmap.estimated_s if nmap.estimated_s else None
    met = bound <= SILENT_GOAL or (estimated is not None and estimated <= SILENT_GOAL)
    estimate = f"{nmap.estimated_s:.0f} s (its estimate)" if nmap.estimated_s else "unknown"
    shown = f"{estimated:.4f}x" if estimated is not None else "?"
    return (
        f"{verdict(met)} {goal}: {versus} > {nmap.wall_s:.0f} s (stopped there), "
        f"~{estimate}: ratio <= {bound:.3f}x, ~{shown}"
    )


# --- Scenario 3: memory over a /8 ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Once a second during the memory run: SYNs so far, and what the job reported."""

    at_s: float
    syns: int
    probed: int | None
    status: str


def probed_of(message: str, checkpoint: dict[str, Any] | None) -> int | None:
    """Addresses probed, from the checkpoint's stats or else the progress message."""
    resume = (checkpoint or {}).get("resume") or {}
    stats = resume.get("stats") or {}
    if "hosts_probed" in stats:
        return int(stats["hosts_probed"])
    match = PROBED.search(message)
    return int(match.group(1)) if match else None


async def watch(url: str, namespace: str, ticks: list[Tick], started: float) -> None:
    """Every second, the SYN counter and the job's progress, until cancelled."""
    while True:
        await asyncio.sleep(1.0)
        row = await fetch_row(url, JOB_STATE)
        status, message, checkpoint = row or ("-", "", None)
        syns = packets_counted(namespace, PORT)
        at_s = time.monotonic() - started
        ticks.append(Tick(at_s, syns, probed_of(message, checkpoint), f"{status} {message!r}"))


async def memory_run(server: str, size: Size, report: Report) -> None:
    """Ronin over a /8 for a while, memory sampled each second, then SIGINT."""
    say(f"scenario 3: {MEMORY_NETWORK} for {size.memory_s:.0f} s, in a namespace counting SYNs")
    with network_namespace("memory", [COUNT_SYNS]) as namespace:
        async with scratch_database(server, "memory") as url:
            measured, ticks = await watched_run(url, namespace, size)
            syns_total = packets_counted(namespace, PORT)
            final = await fetch_row(url, JOB_STATE)
    say(f"  exit {measured.exit_code} {measured.wall_s - size.memory_s:.1f} s after SIGINT")
    memory_findings(size, measured, ticks, syns_total, final, report)


async def watched_run(url: str, namespace: str, size: Size) -> tuple[Measured, list[Tick]]:
    """Ronin over the /8 until stopped; the SYN counter and the job read every second."""
    ticks: list[Tick] = []
    started = time.monotonic()
    watcher = asyncio.create_task(watch(url, namespace, ticks, started), name="watch")
    command = in_namespace(namespace, discover_command(MEMORY_NETWORK, size.memory_concurrency))
    env = discover_env(url, MEMORY_NETWORK, RONIN_MAX_TARGET_PREFIX_V4="8")
    try:
        measured = await measure(command, env=env, stop_after_s=size.memory_s)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return measured, ticks


def memory_findings(
    size: Size,
    measured: Measured,
    ticks: list[Tick],
    syns_total: int,
    final: tuple[Any, ...] | None,
    report: Report,
) -> None:
    """The memory run's samples, row, goal and notes."""
    samples = [rss / MIB for _, rss in measured.rss_each_second]
    say("  RSS each second, MiB: " + " ".join(f"{s:.0f}" for s in samples))
    running = [t for t in ticks if t.at_s <= (measured.stopped_at_s or measured.wall_s)]
    say("  SYNs each second: " + " ".join(f"{t.syns:,}" for t in running))
    reported = [str(t.probed) for t in running if t.probed is not None]
    say(f"  job's probed count each second: {' '.join(reported) or 'never written'}")
    say(f"  job after the stop: {final[0]} {final[1]!r}" if final else "  job: gone")
    stopped_s = measured.stopped_at_s or measured.wall_s
    syns = running[-1].syns if running else 0
    scenario = f"3 memory {MEMORY_NETWORK}"
    tool = f"ronin c={size.memory_concurrency}"
    report.rows.append(
        Row(
            scenario,
            tool,
            job_s=None,
            wall_s=stopped_s,
            probed=syns,
            found=0,
            rss_mib=measured.peak_rss / MIB,
            tree_rss_mib=measured.peak_tree_rss / MIB,
        )
    )
    report.goals.append(memory_goal(samples, measured))
    probed = next((t.probed for t in reversed(ticks) if t.probed is not None), None)
    report.notes.append(
        f"{scenario}: {syns:,} connect attempts (SYNs counted by iptables) in {stopped_s:.0f} s"
        f" ({steady_rate(running):,.0f}/s over the last 10 s); {syns_total - syns:,} more after"
        f" SIGINT; the job's own progress said {probed if probed is not None else 'nothing'}"
        " probed"
    )


def steady_rate(ticks: list[Tick]) -> float:
    """SYNs per second over the last 10 seconds of ticks."""
    if len(ticks) < 2:
        return 0.0
    first = next((t for t in ticks if t.at_s >= ticks[-1].at_s - 10), ticks[0])
    span = ticks[-1].at_s - first.at_s
    return (ticks[-1].syns - first.syns) / span if span else 0.0


def memory_goal(samples: list[float], measured: Measured) -> str:
    """PASS or MISS: peak RSS (with children) under 200 MB, and flat."""
    window = max(1, min(10, len(samples) // 2))
    first = statistics.mean(samples[:window] or [0.0])
    last = statistics.mean(samples[-window:] or [0.0])
    growth = last / first - 1 if first else 0.0
    peak = measured.peak_tree_rss / MIB
    met = peak < MEMORY_GOAL_MIB and growth <= FLAT_GROWTH
    return (
        f"{verdict(met)} memory over {MEMORY_NETWORK}: peak {peak:.0f} MiB with children (goal "
        f"< {MEMORY_GOAL_MIB:.0f}), samples {min(samples, default=0):.0f}-"
        f"{max(samples, default=0):.0f} MiB, first {window} s mean {first:.0f} -> last "
        f"{window} s mean {last:.0f} MiB ({growth:+.0%}; flat: within {FLAT_GROWTH:.0%})"
    )


# --- The table -------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    """The summary: one row per run, then the goals and notes."""
    say()
    head = f"{'scenario':<24}{'tool':<16}{'job s':>8}{'process s':>10}{'probed':>12}"
    say(f"{head}{'addr/s':>9}{'found':>7}{'services':>9}{'RSS MiB':>8}{'+child':>7}")
    for row in report.rows:
        job = f"{row.job_s:.2f}" if row.job_s is not None else "-"
        services = str(row.services) if row.services is not None else "-"
        rss = f"{row.rss_mib:.0f}" if row.rss_mib is not None else "-"
        tree = f"{row.tree_rss_mib:.0f}" if row.tree_rss_mib is not None else "-"
        say(
            f"{row.scenario:<24}{row.tool:<16}{job:>8}{row.wall_s:>10.2f}{row.probed:>12,}"
            f"{row.rate:>9,.0f}{row.found:>7}{services:>9}{rss:>8}{tree:>7}"
        )
    say("(job s: created_at to completed_at of the job; process s: the discover subprocess;")
    say(" addr/s over job s when known; RSS: peak of the discover process, +child: with its")
    say(" child processes; full sweep: median of the runs; nmap (est): stopped, its estimate)")
    say()
    for goal in report.goals:
        say(goal)
    for note in report.notes:
        say(f"NOTE {note}")


async def run(quick: bool) -> None:
    """Every scenario in turn, then the table."""
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    size = QUICK if quick else FULL
    for line in machine_facts():
        say(line)
    say(f"at the start: {load_average()}")
    say(f"open-files soft limit for the processes started here: {raise_fd_limit(FD_LIMIT)}")
    for name in delete_stale_namespaces():
        say(f"deleted namespace {name}, left by a killed run")
    server, origin = server_url("scan")
    say(f"database: {origin}")
    report, started = Report(), time.monotonic()
    set_child_subreaper()
    await full_sweep(size, report)
    await silent_sweep(size, report)
    await memory_run(server, size, report)
    if quick:
        report.notes.append(
            "--quick: a /20 of 16 nodes and a silent /24, where a run is mostly its start-up;"
            " the goals are judged by a full run"
        )
    print_table(report)
    say(f"wall time of the benchmark: {time.monotonic() - started:.0f} s; {load_average()}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.scan", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small size (what CI runs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_benchmark(run(args.quick))


if __name__ == "__main__":
    sys.exit(main())

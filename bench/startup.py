"""Benchmark the CLI's start-up: three operator commands next to the floor of any of them.

Usage: ``python -m bench.startup [--quick] [--runs N]`` from the repository root.

The floor is ``python -c "import typer, rich, psycopg"``: what a Typer command on PostgreSQL
imports at the least. In one run, alternating (so that whatever else the machine does weighs
on every command alike), each of these runs N times (15; ``--quick``: 3) after one warm-up
round: the floor; for reference, a Typer command of one flag that does nothing (Typer 0.29
parses every option, even --help, through pydantic); ``ronin --version``; and the real
``ronin map summary``, ``ronin services`` and ``ronin jobs list``, against a scratch database
on ``RONIN_DATABASE_URL`` (or on an embedded server of the benchmark's own) that holds a few
services and jobs and is dropped at the end. For each, the median wall time and the median
CPU time (user + system, the child's own), and the ratio of each to the floor's. The goal:
every command within 1.5x of the floor (wall time). The command exits 0 whether or not the
goal is met and prints PASS or MISS for each; it fails (exit 1) if a command fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.harness import (
    BenchError,
    children_cpu,
    load_average,
    say,
    scratch_database,
    server_url,
    verdict,
)
from ronin.store.jobs import JobStore
from ronin.store.models import Sighting
from ronin.store.services import ServiceMap

GOAL = 1.5
FULL_RUNS = 15
QUICK_RUNS = 3
SEED_SERVICES = 200
SEED_JOBS = 30
FRESHNESS = timedelta(hours=24)
FLOOR = "floor: import typer, rich, psycopg"
#: A Typer command of one flag that does nothing: Typer 0.29 coerces every parameter (even
#: --help) through a pydantic TypeAdapter, so no Typer command starts below this.
TYPER_COMMAND = "typer: a one-flag command (no goal)"
TYPER_SOURCE = """
import psycopg, rich.console, typer
def main(json: bool = False) -> None:
    rich.console.Console()
typer.run(main)
"""
#: What each case runs, after the interpreter.
CASES: dict[str, list[str]] = {
    FLOOR: ["-c", "import typer, rich, psycopg"],
    TYPER_COMMAND: ["-c", TYPER_SOURCE],
    "ronin --version": ["-m", "ronin", "--version"],
    "ronin map summary": ["-m", "ronin", "map", "summary"],
    "ronin services": ["-m", "ronin", "services"],
    "ronin jobs list": ["-m", "ronin", "jobs", "list"],
}


@dataclass
class Samples:
    """Wall and CPU seconds of one case's runs."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


async def seed(url: str) -> None:
    """A few services and jobs, so that every command has rows to print."""
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        url, min_size=1, max_size=2, open=False
    )
    async with pool:
        now = datetime.now(UTC)
        sightings = [
            Sighting(
                service_id=f"did:web:node-{n // 4}.example#svc-{n}",
                node_id=f"did:web:node-{n // 4}.example",
                node_class=("gateway", "storage", "compute")[n % 3],
                endpoint=f"http://10.0.{n // 250}.{n % 250}:30437/svc-{n}",
                capabilities=(f"cap-{n % 7}", "kos.v1"),
                seen_at=now,
            )
            for n in range(SEED_SERVICES)
        ]
        await ServiceMap(pool, freshness_window=FRESHNESS).upsert(sightings)
        jobs = JobStore(pool)
        for n in range(SEED_JOBS):
            params = {"target": {"type": "network", "value": f"10.1.{n}.0/24"}, "depth": 1}
            await jobs.insert(params, max_attempts=3)


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``python argv``; a failing command stops the bench."""
    before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - started
    used = children_cpu() - before
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed: {done.stderr.decode().strip()}")
    return wall, used.total_s


def measure(runs: int, env: dict[str, str]) -> dict[str, Samples]:
    """Every case, alternating, ``runs`` times after one uncounted warm-up round."""
    samples = {name: Samples() for name in CASES}
    for round_number in range(runs + 1):
        for name, argv in CASES.items():
            wall, cpu = run_once(argv, env)
            if round_number:
                samples[name].wall.append(wall)
                samples[name].cpu.append(cpu)
    return samples


def command_env(url: str) -> dict[str, str]:
    """The commands' environment: the scratch database, and never a remote node."""
    env = {k: v for k, v in os.environ.items() if k not in ("RONIN_URL", "RONIN_TOKEN")}
    env["RONIN_DATABASE_URL"] = url
    root = str(Path(__file__).resolve().parents[1])  # this checkout's ronin, floor alike
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    return env


def report(samples: dict[str, Samples], runs: int) -> None:
    """One line per case: medians, ratios to the floor, and the verdict."""
    floor_wall = statistics.median(samples[FLOOR].wall)
    floor_cpu = statistics.median(samples[FLOOR].cpu)
    say("")
    say(f"start-up, median of {runs} alternating runs; goal: within {GOAL}x of the floor (wall)")
    say(f"{'command':38}{'wall ms':>9}{'x floor':>9}{'CPU ms':>9}{'x floor':>9}  goal")
    for name, case in samples.items():
        wall = statistics.median(case.wall)
        cpu = statistics.median(case.cpu)
        ratio = wall / floor_wall
        goal = "" if name in (FLOOR, TYPER_COMMAND) else verdict(ratio <= GOAL)
        say(
            f"{name:38}{wall * 1000:9.0f}{ratio:9.2f}{cpu * 1000:9.0f}"
            f"{cpu / floor_cpu:9.2f}  {goal}"
        )


async def prepare(server: str) -> None:
    """Check the server answers before anything is created on it."""
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute("SELECT 1")


async def run(runs: int, server: str, origin: str) -> None:
    """Seed a scratch database, measure every case on it, print the table."""
    say(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )
    say(f"server: {origin}; {load_average()}")
    await prepare(server)
    async with scratch_database(server, "ronin_bench_startup") as url:
        await seed(url)
        say(f"seeded {SEED_SERVICES} services and {SEED_JOBS} jobs; {runs} runs of each case ...")
        started = time.monotonic()
        samples = await asyncio.to_thread(measure, runs, command_env(url))
    report(samples, runs)
    say(f"wall time of the measurement: {time.monotonic() - started:.0f} s; {load_average()}")


def parse_args(argv: list[str]) -> int:
    """--quick or --runs N: how many runs of each case."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs of each")
    parser.add_argument("--runs", type=int, help=f"runs of each case ({FULL_RUNS})")
    args = parser.parse_args(argv)
    runs: int = args.runs or (QUICK_RUNS if args.quick else FULL_RUNS)
    if runs < 1:
        parser.error("--runs must be at least 1")
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    runs = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        server, origin = server_url("startup")
        asyncio.run(run(runs, server, origin))
    except (BenchError, psycopg.Error) as exc:
        print(f"error: the benchmark could not run: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

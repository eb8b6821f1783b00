"""Benchmark the live map: how soon a death is confirmed, what re-verifying costs, and whether
a partition or a lossy link makes anything falsely gone.

Usage: ``python -m bench.liveness [--quick]`` from the repository root (root adds the lossy
link and the real partition; without it they are replaced or skipped, and the output says so).

Every part runs on a scratch database of its own, on ``RONIN_DATABASE_URL`` (or on an embedded
server of the benchmark's own), dropped at the end. The map is seeded as a crawl would seed it
(each node's descriptor fetched, its sightings upserted); then a real ``ronin worker`` process
(no job queued: it only verifies) re-checks it at ``RONIN_VERIFY_INTERVAL_S`` while the
beacons stay in this process, on loopback addresses of 127.61.0.0/20.

1. Death to ``gone``: a fleet of 500 nodes (``--quick``: 100) verified every 10 s (1 s); once
   every node has answered, 50 (10) of them die at random times over two intervals (their
   listeners close: connections are refused). For each, the time from its death to its
   services' ``state_since`` as ``gone``; p50 and p95. Goal: p95 <= 1.5x the interval; for
   scale, Kubernetes marks a node NotReady after 50 s and Consul's reaper removes a critical
   service after 60-90 s. A node that did not die but went ``gone`` counts as false.
2. Cost: 10,000 services on 2,500 nodes verified every 60 s (``--quick``: 1,000 on 250 every
   4 s); from half an interval after every node has answered, CPU is metered over one
   interval (two): of the verifying process, and of every PostgreSQL process (the
   postmaster's children, read from /proc, less the benchmark's own connection). Goal: under
   half of one core together. The CPU per check and what it makes at the full size every 60 s
   are printed too; with ``--quick`` the goal is judged on that projection.
3. The partition guard: 100 nodes (30) in a network namespace reached over a veth, verified
   every 2 s. Every SYN dropped (iptables in the namespace) for the confirmation period and two
   intervals more: no service may go ``gone`` and at least 99 % must be ``unverified``; the
   guard events in the verifier's log are counted, and the time until all are ``alive`` once the
   rule is removed. Then 10 % of packets dropped at random for 30 intervals (4): no service
   may go ``gone``. Without root, the partition is every beacon stopping at once on loopback,
   and the lossy link is skipped.

The command exits 0 whether or not a goal is met and prints PASS or MISS for each; it fails
(exit 1) if a step could not run. Figures from a shared machine vary with its load, printed
with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.harness import (
    ROOT,
    BenchError,
    Connection,
    CpuMeter,
    connect,
    load_average,
    percentile,
    ronin_env,
    run_benchmark,
    say,
    scratch_database,
    server_facts,
    server_url,
    verdict_line,
)
from bench.liveness_support import (
    NETWORK,
    Fleet,
    VerifyingProcess,
    fleet_urls,
    seed_map,
    server_processes,
    verifying,
)
from ronin.beacon import descriptor_url
from tests.support import netns
from tests.support.netns_fleet import (
    SYN_RULE,
    add_rule,
    iptables_reason,
    loss_rule,
    namespace_beacons,
    remove_rule,
)

DEATH_GOAL = 1.5
CPU_GOAL_CORES = 0.5
UNVERIFIED_GOAL = 0.99
LOSS = 0.1
KUBERNETES_S = 50
CONSUL_S = "60-90"
FULL_SERVICES, FULL_NODES, FULL_INTERVAL_S = 10_000, 2_500, 60.0
POLL_S = 0.1
#: Waits for what must happen (a round to finish, a heal): bounds for a broken run only.
ROUND_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Size:
    """How big each part is."""

    death_nodes: int
    deaths: int
    death_interval_s: float
    cost_nodes: int
    cost_services: int
    cost_interval_s: float
    cost_intervals: int
    guard_nodes: int
    loss_intervals: int


FULL = Size(500, 50, 10.0, FULL_NODES, FULL_SERVICES, FULL_INTERVAL_S, 1, 100, 30)
QUICK = Size(100, 10, 1.0, 250, 1_000, 4.0, 2, 30, 4)
GUARD_INTERVAL_S = 2.0
SERVICES_PER_DEATH_NODE = 2


# --- Reading the map -------------------------------------------------------------------------


async def by_state(conn: Connection) -> dict[str, int]:
    """Services by state."""
    cur = await conn.execute("SELECT state, count(*) FROM service_liveness GROUP BY state")
    return {str(state): int(count) for state, count in await cur.fetchall()}


async def gone_nodes(conn: Connection) -> dict[str, float]:
    """Nodes with a gone service: when (epoch seconds) their last service went."""
    cur = await conn.execute(
        "SELECT d.node_id, extract(epoch FROM max(l.state_since))::float8"
        " FROM service_liveness l JOIN discovered_services d USING (service_id)"
        " WHERE l.state = 'gone' GROUP BY d.node_id"
    )
    return {str(node): float(at) for node, at in await cur.fetchall()}


async def checks_claimed(conn: Connection) -> int:
    """Checks claimed so far, retries included (each claim starts a round)."""
    row = await (await conn.execute("SELECT coalesce(sum(round), 0) FROM node_checks")).fetchone()
    return int(row[0]) if row else 0


async def nodes_answered(conn: Connection) -> int:
    """Nodes whose descriptor has answered a check."""
    row = await (
        await conn.execute("SELECT count(*) FROM node_checks WHERE last_answered_at IS NOT NULL")
    ).fetchone()
    return int(row[0]) if row else 0


async def wait_for(
    what: str, condition: Callable[[], Awaitable[bool]], process: VerifyingProcess
) -> float:
    """Poll until ``condition`` holds; the seconds it took. BenchError if the verifier exits
    or it never does."""
    started = time.monotonic()
    while not await condition():
        if process.process.returncode is not None:
            raise BenchError(f"the verifier exited before {what}")
        if time.monotonic() - started > ROUND_TIMEOUT_S:
            raise BenchError(f"no {what} after {ROUND_TIMEOUT_S:.0f} s")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


# --- Setting up ------------------------------------------------------------------------------


def verifier_env(url: str, interval_s: float, allow: str) -> dict[str, str]:
    """The verifying process's environment."""
    env = ronin_env(
        url,
        RONIN_VERIFY_INTERVAL_S=f"{interval_s:g}",
        RONIN_VERIFY_GUARD_FRACTION="0.3",
        RONIN_ALLOW=allow,
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


async def seed(url: str, urls: list[str], allow: str) -> int:
    """The map seeded from ``urls`` on a pool closed afterwards (so no backend of it is metered)."""
    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
        url, min_size=1, max_size=4, open=False
    )
    async with pool:
        return await seed_map(pool, urls, allow)


@contextlib.asynccontextmanager
async def started_fleet(nodes: int, services: int) -> AsyncIterator[Fleet]:
    """A fleet listening, closed on the way out."""
    fleet = Fleet(nodes, services)
    try:
        await fleet.start()
        yield fleet
    finally:
        await fleet.close()


# --- 1. Death to gone ------------------------------------------------------------------------


async def death_to_gone(server: str, size: Size, logs: Path) -> None:
    """Kill nodes at random times; how long each takes to be gone."""
    interval = size.death_interval_s
    say(f"\n1. death to gone: {size.deaths} deaths among {size.death_nodes} nodes, interval")
    say(f"   {interval:g} s, deaths spread over {2 * interval:g} s")
    async with (
        scratch_database(server, "ronin_bench_liveness") as url,
        started_fleet(size.death_nodes, SERVICES_PER_DEATH_NODE) as fleet,
        await connect(url) as conn,
    ):
        await seed(url, fleet_urls(fleet.keys), NETWORK)
        env = verifier_env(url, interval, NETWORK)
        async with verifying(env, logs / "death.log") as process:

            async def all_answered() -> bool:
                return await nodes_answered(conn) == size.death_nodes

            await wait_for("first round", all_answered, process)
            victims = random.Random(12).sample(range(size.death_nodes), size.deaths)
            deaths: dict[str, float] = {}
            closing = []
            started = time.monotonic()
            for offset, victim in sorted(
                (random.uniform(0, 2 * interval), victim) for victim in victims
            ):
                await asyncio.sleep(max(0.0, offset - (time.monotonic() - started)))
                killed_at, task = fleet.kill(victim)
                deaths[fleet.node_ids[victim]] = killed_at
                closing.append(task)
            await asyncio.gather(*closing)

            async def all_gone() -> bool:
                return set(deaths) <= set(await gone_nodes(conn))

            with contextlib.suppress(BenchError):
                await wait_for("every death gone", all_gone, process)
            gone = await gone_nodes(conn)
            guard_events = process.guard_events()
    latencies = [gone[node] - at for node, at in deaths.items() if node in gone]
    false_gone = len(set(gone) - set(deaths))
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    say(f"   gone: {len(latencies)} of {len(deaths)}; false gone: {false_gone};")
    say(f"   guard events: {guard_events}")
    say(
        f"   death to gone: p50 {p50:.2f} s ({p50 / interval:.2f}x), p95 {p95:.2f} s"
        f" ({p95 / interval:.2f}x), max {max(latencies, default=float('nan')):.2f} s"
    )
    met = len(latencies) == len(deaths) and false_gone == 0 and p95 <= DEATH_GOAL * interval
    say(
        verdict_line(
            met,
            f"death to gone p95 <= {DEATH_GOAL}x the interval ({DEATH_GOAL * interval:g} s),"
            f" every death gone, none false: p95 {p95:.2f} s",
        )
    )
    say(
        f"   yardsticks at their defaults: Kubernetes NotReady {KUBERNETES_S} s,"
        f" Consul's reaper {CONSUL_S} s"
    )


# --- 2. Cost ---------------------------------------------------------------------------------


async def cost(server: str, size: Size, quick: bool, logs: Path) -> None:
    """CPU of the verifier and of PostgreSQL over whole intervals of re-verification."""
    interval, nodes = size.cost_interval_s, size.cost_nodes
    per_node = size.cost_services // nodes
    say(f"\n2. cost: {nodes * per_node:,} services on {nodes:,} nodes every {interval:g} s,")
    say(f"   metered over {size.cost_intervals} interval(s)")
    async with (
        scratch_database(server, "ronin_bench_liveness") as url,
        started_fleet(nodes, per_node) as fleet,
        await connect(url) as conn,
    ):
        services = await seed(url, fleet_urls(fleet.keys), NETWORK)
        postgres = await server_processes(conn)
        env = verifier_env(url, interval, NETWORK)
        async with verifying(env, logs / "cost.log") as process:

            async def all_answered() -> bool:
                return await nodes_answered(conn) == nodes

            first_s = await wait_for("first round", all_answered, process)
            await asyncio.sleep(interval / 2)  # between rounds: the window holds whole ones
            checks_before = await checks_claimed(conn)
            meter = CpuMeter([process.pid])
            if postgres is not None:
                postgres.begin()
            await asyncio.sleep(size.cost_intervals * interval)
            usage = meter.stop()
            postgres_s = postgres.used_s() if postgres is not None else float("nan")
            checks = await checks_claimed(conn) - checks_before
    report_cost(usage.of([process.pid]), postgres_s, usage.wall_s, checks, services, quick)
    say(f"   first round (every node, at once): {first_s:.1f} s;")
    say(f"   the beacons (this process) used {usage.own.total_s:.2f} s CPU")
    if postgres is None:
        say("   PostgreSQL is not on this machine: its CPU is not metered")


def report_cost(
    worker_s: float, postgres_s: float, wall_s: float, checks: int, services: int, quick: bool
) -> None:
    """Shares of a core, CPU per check, the full-size projection and the verdict."""
    if checks == 0:
        raise BenchError("no check was made while metering")
    total_s = worker_s + postgres_s
    say(f"   {checks:,} node checks ({services:,} services) in {wall_s:.1f} s; {load_average()}")
    say(
        f"   CPU share of one core: verifier {worker_s / wall_s:.3f},"
        f" PostgreSQL {postgres_s / wall_s:.3f}, together {total_s / wall_s:.3f}"
    )
    per_check_ms = total_s / checks * 1000
    say(
        f"   CPU per node check: verifier {worker_s / checks * 1000:.2f} ms,"
        f" PostgreSQL {postgres_s / checks * 1000:.2f} ms"
    )
    projected = per_check_ms / 1000 * FULL_NODES / FULL_INTERVAL_S
    say(
        f"   at {FULL_SERVICES:,} services on {FULL_NODES:,} nodes every {FULL_INTERVAL_S:g} s"
        f" that is {projected:.3f} of a core"
    )
    share = projected if quick else total_s / wall_s
    judged = "projected" if quick else "measured"
    say(
        verdict_line(
            share < CPU_GOAL_CORES,
            f"re-verifying {FULL_SERVICES:,} services every {FULL_INTERVAL_S:g} s under"
            f" {CPU_GOAL_CORES} of a core (verifier + PostgreSQL): {share:.3f} ({judged})",
        )
    )


# --- 3. The partition guard and the lossy link -----------------------------------------------


@dataclass
class GuardRun:
    """What the guard part saw."""

    services: int
    most_gone: int = 0
    unverified: int = 0
    heal_s: float = float("nan")
    guard_events: int = 0
    loss_gone: int | None = None
    loss_checks: int = 0


async def watch(conn: Connection, seconds: float, run: GuardRun) -> dict[str, int]:
    """Poll the states for ``seconds``, keeping the most services ever gone; the last counts."""
    deadline = time.monotonic() + seconds
    while True:
        states = await by_state(conn)
        run.most_gone = max(run.most_gone, states.get("gone", 0))
        if time.monotonic() >= deadline:
            return states
        await asyncio.sleep(POLL_S)


async def hold_partition(
    conn: Connection, process: VerifyingProcess, run: GuardRun, cut: Callable[[], None]
) -> None:
    """Cut the link, wait for every service to be unverified (or the bound), then two
    intervals more; then the figures."""
    cut()

    async def all_unverified() -> bool:
        states = await by_state(conn)
        run.most_gone = max(run.most_gone, states.get("gone", 0))
        return states.get("unverified", 0) == run.services

    with contextlib.suppress(BenchError):
        await wait_for("every service unverified", all_unverified, process)
    states = await watch(conn, 2 * GUARD_INTERVAL_S, run)
    run.unverified = states.get("unverified", 0)


async def heal(conn: Connection, process: VerifyingProcess, run: GuardRun) -> None:
    async def all_alive() -> bool:
        return (await by_state(conn)).get("alive", 0) == run.services

    run.heal_s = await wait_for("every service alive again", all_alive, process)


async def guard_in_namespace(server: str, size: Size, logs: Path) -> GuardRun:
    """Partition (every SYN dropped) and loss on a veth into a namespace of beacons."""
    with netns.veth_namespace() as link:
        allow = f"{link.inner_address}/32"
        async with (
            namespace_beacons(link, size.guard_nodes) as ports,
            scratch_database(server, "ronin_bench_liveness") as url,
            await connect(url) as conn,
        ):
            urls = [descriptor_url(link.inner_address, port) for port in ports]
            run = GuardRun(await seed(url, urls, allow))
            env = verifier_env(url, GUARD_INTERVAL_S, allow)
            async with verifying(env, logs / "guard.log") as process:

                async def all_answered() -> bool:
                    return await nodes_answered(conn) == size.guard_nodes

                await wait_for("first round", all_answered, process)
                await hold_partition(conn, process, run, lambda: add_rule(link, SYN_RULE))
                remove_rule(link, SYN_RULE)
                await heal(conn, process, run)
                run.guard_events = process.guard_events()
                rule = loss_rule(LOSS)
                add_rule(link, rule)
                before, most_gone = await checks_claimed(conn), run.most_gone
                run.most_gone = 0
                try:
                    await watch(conn, size.loss_intervals * GUARD_INTERVAL_S, run)
                finally:
                    remove_rule(link, rule)
                run.loss_gone, run.most_gone = run.most_gone, most_gone
                run.loss_checks = await checks_claimed(conn) - before
    return run


async def guard_on_loopback(server: str, size: Size, logs: Path) -> GuardRun:
    """Without namespaces: the partition is every beacon stopping at once."""
    async with (
        scratch_database(server, "ronin_bench_liveness") as url,
        started_fleet(size.guard_nodes, SERVICES_PER_DEATH_NODE) as fleet,
        await connect(url) as conn,
    ):
        run = GuardRun(await seed(url, fleet_urls(fleet.keys), NETWORK))
        async with verifying(verifier_env(url, GUARD_INTERVAL_S, NETWORK), logs / "guard.log") as p:

            async def all_answered() -> bool:
                return await nodes_answered(conn) == size.guard_nodes

            await wait_for("first round", all_answered, p)

            def stop_all() -> None:
                for index in range(size.guard_nodes):
                    fleet.kill(index)

            await hold_partition(conn, p, run, stop_all)
            run.guard_events = p.guard_events()
    return run


async def guard(server: str, size: Size, logs: Path) -> None:
    """The partition and the lossy link, in a namespace when this machine allows it."""
    reason = netns.unavailable_reason() or iptables_reason()
    where = "every beacon stopped at once (loopback)" if reason else "every SYN dropped (veth)"
    say(f"\n3. partition guard: {size.guard_nodes} nodes every {GUARD_INTERVAL_S:g} s; {where}")
    if reason:
        run = await guard_on_loopback(server, size, logs)
    else:
        run = await guard_in_namespace(server, size, logs)
    share = run.unverified / run.services
    say(
        f"   {run.services} services: {run.unverified} unverified, at most {run.most_gone} gone;"
        f" guard events: {run.guard_events}"
    )
    say(
        verdict_line(
            run.most_gone == 0 and share >= UNVERIFIED_GOAL,
            f"partition: 0 false gone, >= {UNVERIFIED_GOAL:.0%} unverified:"
            f" {run.most_gone} gone, {share:.1%} unverified",
        )
    )
    if reason:
        say(f"   healing and the lossy link skipped: {reason}")
        return
    say(f"   rule removed: every service alive again in {run.heal_s:.1f} s")
    say(
        f"   {LOSS:.0%} loss for {size.loss_intervals} intervals: {run.loss_checks} node checks,"
        f" at most {run.loss_gone} gone"
    )
    say(verdict_line(run.loss_gone == 0, f"lossy link: 0 false gone: {run.loss_gone}"))


# --- Running ---------------------------------------------------------------------------------


async def run(size: Size, quick: bool) -> None:
    """Every part, one after another, on one server."""
    server, origin = server_url("liveness")
    say(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )
    say(f"server: {origin}, {await server_facts(server)}; {load_average()}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ronin-bench-liveness-") as logs:
        await death_to_gone(server, size, Path(logs))
        await cost(server, size, quick, Path(logs))
        await guard(server, size, Path(logs))
    say(f"\nwall time: {time.monotonic() - started:.0f} s; {load_average()}")


def parse_size(argv: list[str]) -> tuple[Size, bool]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small size (what CI runs)")
    args = parser.parse_args(argv)
    return (QUICK if args.quick else FULL), bool(args.quick)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 unless it could not run."""
    size, quick = parse_size(sys.argv[1:] if argv is None else argv)
    return run_benchmark(run(size, quick), psycopg.Error, OSError)


if __name__ == "__main__":
    sys.exit(main())

"""What ``bench/scan.py`` stands on: scratch databases, a beacon process, network namespaces,
and running a command while its memory is sampled.

Every helper cleans up after itself on the way out, error or not: databases are dropped,
namespaces deleted, processes stopped. Run as ``python -m bench.scan_support beacons NETWORK
COUNT PORT``, this module is the beacon process: it serves COUNT demo nodes spread over
NETWORK, prints ``ready``, and exits when its standard input closes (so it cannot outlive the
benchmark, however the benchmark ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import psutil

from bench import harness
from bench.harness import ROOT, BenchError, CpuMeter, cpu_of, stop_process

RSS_POLL_S = 0.05
CHILDREN_POLL_S = 0.5
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
NAMESPACE_PREFIX = "ronin-bench-"
OPEN_PORT = re.compile(r"^\d+/tcp\s+open\s", re.MULTILINE)
NMAP_STATS = re.compile(
    r"Stats: (\d+):(\d+):(\d+) elapsed; (\d+) hosts completed \(\d+ up\), (\d+) undergoing"
)
NMAP_DONE = re.compile(r"About ([\d.]+)% done")


# --- The machine -----------------------------------------------------------------------------


def machine_facts() -> list[str]:
    """CPUs, kernel, Python and nmap's version, one line each."""
    nmap = subprocess.run(["nmap", "--version"], capture_output=True, text=True, check=True)
    return [
        f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), kernel {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        f"nmap: {nmap.stdout.splitlines()[0].strip()}",
    ]


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-files limit to ``needed`` (capped by the hard one); children inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- Databases -------------------------------------------------------------------------------


def scratch_database(server: str, label: str) -> AbstractAsyncContextManager[str]:
    """A fresh migrated database for ``label``; dropped on the way out."""
    return harness.scratch_database(server, f"ronin_bench_scan_{label}")


# --- Network namespaces ----------------------------------------------------------------------


def run_checked(*command: str) -> str:
    """Run a short command; its output, or ``BenchError`` with its error output."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def delete_stale_namespaces() -> list[str]:
    """Delete namespaces an earlier, killed run of this benchmark left (its pid is gone)."""
    stale = []
    for line in run_checked("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = name.removeprefix(NAMESPACE_PREFIX).split("-")[0]
        if name.startswith(NAMESPACE_PREFIX) and pid.isdigit() and not psutil.pid_exists(int(pid)):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
            stale.append(name)
    return stale


@contextmanager
def network_namespace(label: str, rules: Sequence[Sequence[str]]) -> Iterator[str]:
    """A namespace of our own with lo up and these iptables rules; deleted on the way out."""
    name = f"{NAMESPACE_PREFIX}{os.getpid()}-{label}"
    run_checked("ip", "netns", "add", name)
    try:
        run_checked("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        for rule in rules:
            run_checked("ip", "netns", "exec", name, "iptables", *rule)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def in_namespace(namespace: str | None, command: Sequence[str]) -> list[str]:
    """``command``, run inside ``namespace`` when one is given."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return [*prefix, *command]


def packets_counted(namespace: str, port: int) -> int:
    """Packets the namespace's INPUT rules on ``port`` matched (SYNs: connect attempts)."""
    listing = run_checked("ip", "netns", "exec", namespace, "iptables", "-L", "INPUT", "-v", "-x")
    return sum(
        int(line.split()[0]) for line in listing.splitlines() if f"dpt:{port}" in line.split()
    )


# --- The beacon process ----------------------------------------------------------------------


@asynccontextmanager
async def beacon_process(network: str, count: int, port: int) -> AsyncIterator[int]:
    """A separate process serving ``count`` beacons over ``network``; yields its pid."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.scan_support", "beacons", network, str(count), str(port)),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise BenchError(f"the beacon process said {line!r}, not ready")
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the beacons' cue to stop
        await stop_process(process, signal.SIGTERM, STOP_GRACE_S)


async def serve_beacons(network: str, count: int, port: int) -> None:
    """The beacon process: serve the fleet until standard input closes."""
    from ronin.beacon import BeaconServer, demo_descriptor
    from tests.support.fleet import addresses

    raise_fd_limit(count + 1024)
    loop = asyncio.get_running_loop()
    async with BeaconServer() as server:
        for host in addresses(network, count):
            await server.add(host, port, demo_descriptor(host, port))
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.buffer.read)


# --- Measured processes ----------------------------------------------------------------------

_PR_SET_CHILD_SUBREAPER = 36
ORPHANS_WAIT_S = 5.0


def _reap_zombies(known: set[int]) -> list[int]:
    """Reap the children not in ``known`` that have exited; the PIDs of those still running."""
    running = []
    for child in psutil.Process().children():
        if child.pid in known:
            continue
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)  # exited: this does not block
            else:
                running.append(child.pid)
    return running


def set_child_subreaper() -> None:
    """Adopt the orphans of the commands run here (prctl PR_SET_CHILD_SUBREAPER).

    The embedded PostgreSQL a ``ronin`` run starts is ``pg_ctl``'s child, and ``pg_ctl``
    exits at once: without this the server would be init's, and its CPU nobody's. Adopted,
    it is waited for here when it stops (``measure(..., adopt_orphans=True)``), and its CPU
    (with its backends', which it waited for) counts in the run's.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")


async def reap_orphans(known: set[int]) -> list[int]:
    """Wait for the children of this process that it did not start (adopted orphans) and
    are not in ``known``, up to ``ORPHANS_WAIT_S``; the PIDs of those still running then."""
    deadline = time.monotonic() + ORPHANS_WAIT_S
    while True:
        running = _reap_zombies(known)
        if not running or time.monotonic() > deadline:
            return running
        await asyncio.sleep(0.005)


class TreeSampler:
    """Memory and CPU time of a process and of its whole tree (its sweep processes, say)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        #: CPU seconds (user + system) of each process of the tree, as last seen.
        self.cpu_s: dict[int, float] = {}
        self._children: list[psutil.Process] = []
        self._children_read = 0.0

    def sample(self) -> tuple[int, int]:
        """(the process's RSS, the tree's RSS) in bytes; 0 once gone."""
        now = time.monotonic()
        if now - self._children_read >= CHILDREN_POLL_S:
            with contextlib.suppress(psutil.Error):
                self._children = self.process.children(recursive=True)
            self._children_read = now
        own = self._observe(self.process)
        return own, own + sum(self._observe(child) for child in self._children)

    def _observe(self, process: psutil.Process) -> int:
        """The process's RSS in bytes (0 once gone); its CPU time is noted on the way."""
        try:
            with process.oneshot():
                rss = int(process.memory_info().rss)
                cpu = cpu_of(process)
        except psutil.Error:
            return 0
        self.cpu_s[process.pid] = cpu.total_s
        return rss

    def kill_leftovers(self) -> None:
        """Kill the descendants seen last that outlived the process (orphaned sweep workers)."""
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


@dataclass(slots=True)
class Measured:
    """One command's run: its exit, wall time, memory, and output."""

    exit_code: int
    wall_s: float
    #: Wall-clock times (time.time()) of the start and the exit, to set beside the job's own.
    started_at: float = 0.0
    ended_at: float = 0.0
    #: CPU seconds of the process and every descendant it waited for (its sweep processes).
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    #: CPU seconds of the process itself and of its children, as last sampled.
    own_cpu_s: float = 0.0
    children_cpu_s: list[float] = field(default_factory=list)
    peak_rss: int = 0
    peak_tree_rss: int = 0
    #: (seconds since start, the tree's resident bytes), once a second.
    rss_each_second: list[tuple[float, int]] = field(default_factory=list)
    #: When the command was told to stop (seconds since start), if it was.
    stopped_at_s: float | None = None
    stdout: str = ""
    stderr: str = ""
    stack_dump: str = ""
    #: Adopted orphans still running once the wait for them ended (``adopt_orphans``).
    orphans_running: list[int] = field(default_factory=list)


async def measure(
    command: Sequence[str],
    *,
    stop_after_s: float,
    env: dict[str, str] | None = None,
    dump_stacks: bool = False,
    adopt_orphans: bool = False,
) -> Measured:
    """Run ``command``, its memory sampled every 50 ms; after ``stop_after_s``, SIGINT (then
    SIGKILL), with a py-spy dump of its stacks first if asked and py-spy is installed.

    ``adopt_orphans``: the processes it left to this one (``set_child_subreaper``) are waited
    for, so that their CPU counts in the run's."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        known = {child.pid for child in psutil.Process().children()}
        started, started_at = time.monotonic(), time.time()
        meter = CpuMeter()
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        sampler = TreeSampler(process.pid)
        try:
            measured = await _sample(process, sampler, started, stop_after_s, dump_stacks)
        finally:
            await stop_process(process, signal.SIGKILL, STOP_GRACE_S)
            sampler.kill_leftovers()
        measured.started_at, measured.ended_at = started_at, time.time()
        if adopt_orphans:
            measured.orphans_running = await reap_orphans(known | {process.pid})
        cpu = dict(sampler.cpu_s)
        measured.own_cpu_s = cpu.pop(process.pid, 0.0)
        measured.children_cpu_s = sorted(cpu.values(), reverse=True)
        waited = meter.stop().children
        measured.cpu_user_s, measured.cpu_system_s = waited.user_s, waited.system_s
        for stream in (out, err):
            stream.seek(0)
        measured.stdout = out.read().decode(errors="replace")
        measured.stderr = err.read().decode(errors="replace")
    return measured


async def _sample(
    process: asyncio.subprocess.Process,
    sampler: TreeSampler,
    started: float,
    stop_after_s: float,
    dump_stacks: bool,
) -> Measured:
    """Poll the process's memory until it exits, or stop it after ``stop_after_s``."""
    measured = Measured(exit_code=0, wall_s=0.0)
    waiter = asyncio.create_task(process.wait(), name=f"wait {process.pid}")
    next_second = started + 1.0
    while not waiter.done() and time.monotonic() < started + stop_after_s:
        own, tree = sampler.sample()
        measured.peak_rss = max(measured.peak_rss, own)
        measured.peak_tree_rss = max(measured.peak_tree_rss, tree)
        if time.monotonic() >= next_second and tree:
            measured.rss_each_second.append((time.monotonic() - started, tree))
            next_second += 1.0
        await asyncio.wait([waiter], timeout=RSS_POLL_S)
    if not waiter.done():
        measured.stopped_at_s = time.monotonic() - started
        if dump_stacks:
            measured.stack_dump = stack_dump(process.pid)
        await stop_process(process, signal.SIGINT, STOP_GRACE_S)
    measured.exit_code = await waiter
    measured.wall_s = time.monotonic() - started
    return measured


def stack_dump(pid: int) -> str:
    """``py-spy dump`` of a process (where a stuck run waits), or why there is none."""
    if shutil.which("py-spy") is None:
        return "(py-spy is not installed: no stack dump)"
    done = subprocess.run(
        ["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    )
    return (done.stdout + done.stderr).strip()


# --- nmap ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NmapRun:
    """One nmap sweep: wall time, open ports, and whether it finished within its budget."""

    wall_s: float
    open_ports: int
    finished: bool
    cpu_user_s: float
    cpu_system_s: float
    #: nmap's own estimate of its whole run, from its last progress report (if stopped).
    estimated_s: float | None


async def run_nmap(
    cidr: str, port: int, timing: str, namespace: str | None, budget_s: float
) -> NmapRun:
    """``nmap -sT`` connect sweep of one port, stopped (SIGINT) if it outlasts ``budget_s``."""
    command = ["nmap", "-sT", "-Pn", "-n", "-p", str(port), "--open", timing]
    command += ["--stats-every", "5s", cidr]
    measured = await measure(in_namespace(namespace, command), stop_after_s=budget_s)
    finished = measured.stopped_at_s is None
    if finished and measured.exit_code != 0:
        raise BenchError(f"nmap exited {measured.exit_code}: {measured.stderr[-500:]}")
    hosts = 2 ** (32 - int(cidr.split("/")[1]))
    return NmapRun(
        wall_s=measured.stopped_at_s or measured.wall_s,
        open_ports=len(OPEN_PORT.findall(measured.stdout)),
        finished=finished,
        cpu_user_s=measured.cpu_user_s,
        cpu_system_s=measured.cpu_system_s,
        estimated_s=None if finished else nmap_estimate(measured.stdout, hosts),
    )


def nmap_estimate(output: str, hosts: int) -> float | None:
    """nmap's whole run, extrapolated from its last ``--stats-every`` report."""
    stats, done = NMAP_STATS.findall(output), NMAP_DONE.findall(output)
    if not stats or not done:
        return None
    hours, minutes, seconds, completed, in_group = (int(value) for value in stats[-1])
    elapsed_s = hours * 3600 + minutes * 60 + seconds
    # "About N% done" is of the host group being scanned, not of the whole range.
    fraction = (completed + in_group * float(done[-1]) / 100) / hosts
    return elapsed_s / fraction if fraction > 0 else None


def main(argv: list[str]) -> int:
    """``beacons NETWORK COUNT PORT``: be the beacon process."""
    if len(argv) != 4 or argv[0] != "beacons":
        print("usage: python -m bench.scan_support beacons NETWORK COUNT PORT", file=sys.stderr)
        return 2
    asyncio.run(serve_beacons(argv[1], int(argv[2]), int(argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

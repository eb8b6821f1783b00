"""``ronin discover TARGET``: submit a discovery job and, with ``--wait``, see it through.

With ``--wait`` no server is needed: the command runs the job itself unless a worker claims
it first (then it follows that worker's progress), shows a Rich progress bar on a terminal
and plain lines otherwise, and prints a summary.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ronin.cli.backend import open_backend
from ronin.cli.common import app, console, error_console, fail, run
from ronin.config import Settings
from ronin.discovery.executor import discovery_executor
from ronin.discovery.params import DEFAULT_PROTOCOLS, KOS_PORT, target_from_text
from ronin.discovery.policy import ScopePolicy
from ronin.errors import RoninError
from ronin.jobs.follow import JobEvents, follow_job
from ronin.jobs.submit import submit_job
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.database import open_database
from ronin.store.job_models import Job
from ronin.store.jobs import JobStore
from ronin.store.services import ServiceMap


class Interrupted(RoninError):
    """The command was interrupted; the job was handed back to the queue."""

    code = "INTERRUPTED"


def target_params(
    target: str,
    *,
    depth: int,
    ports: Sequence[int],
    protocols: Sequence[str],
    rate: float | None = None,
    concurrency: int | None = None,
    mdns_window_s: float | None = None,
) -> dict[str, Any]:
    """Job params (PROTOCOL.md section 5) for a target as an operator types it."""
    try:
        kind, value = target_from_text(target)
    except RoninError as exc:
        fail(exc)  # before any database is opened: a typo never becomes a job
    params: dict[str, Any] = {
        "target": {"type": kind, "value": value},
        "protocols": list(protocols or DEFAULT_PROTOCOLS),
        "depth": depth,
        "ports": list(ports) or [KOS_PORT],
    }
    if rate is not None:
        params["rate"] = rate
    if concurrency is not None:
        params["concurrency"] = concurrency
    if mdns_window_s is not None:
        params["mdns_window_s"] = mdns_window_s
    return params


async def submit_and_wait(
    settings: Settings, params: dict[str, Any], *, wait: bool, console: Console
) -> Job:
    """Submit the job; with ``wait``, run or follow it to its end. Returns the job."""
    async with await open_database(settings) as database:
        store = JobStore(database.pool)
        job, _ = await submit_job(
            store,
            params,
            max_attempts=settings.job_max_attempts,
            policy=ScopePolicy.from_settings(settings),
        )
        if not wait:
            return job
        worker = Worker(
            conninfo=database.conninfo,
            store=store,
            services=ServiceMap(database.pool, freshness_window=settings.freshness_window),
            executor=discovery_executor(settings),
            options=WorkerOptions.from_settings(settings, concurrency=1),
        )
        runner = asyncio.create_task(worker.run_one(job.job_id), name="run own job")
        shown = asyncio.create_task(_show(database.conninfo, store, job.job_id, console))
        interrupted = asyncio.Event()

        def on_signal() -> None:
            worker.release_all()  # back to the queue, the attempt not spent
            interrupted.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        stop = asyncio.create_task(interrupted.wait())
        try:
            await asyncio.wait({shown, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not shown.done():
                shown.cancel()
            await runner  # bounded: the job ended, or was handed back on the signal
            await asyncio.gather(shown, stop, return_exceptions=True)
        if interrupted.is_set() and not (shown.done() and not shown.cancelled()):
            raise Interrupted(
                f"interrupted: job {job.job_id} is back in the queue for a worker "
                "(ronin worker) to finish"
            )
        return shown.result()


async def submit_remotely(
    settings: Settings, params: dict[str, Any], *, wait: bool, console: Console
) -> Job:
    """Submit to the node at ``RONIN_URL``; with ``wait``, follow its events to the end."""
    async with open_backend(settings) as backend:
        job = await backend.submit(params)
        if not wait:
            return job
        async for status, progress, message in backend.follow(job.job_id):
            console.print(f"{status} {progress:3d}% {message}", highlight=False)
        return await backend.job(job.job_id)


async def _show(conninfo: str, store: JobStore, job_id: uuid.UUID, console: Console) -> Job:
    """Follow the job: a progress bar on a terminal, plain lines elsewhere."""
    final: Job | None = None
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}"),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("discovering", total=100, message="")
            async with JobEvents(conninfo) as events:
                async for job in follow_job(store, job_id, events):
                    bar.update(task, completed=job.progress, message=job.progress_message)
                    final = job
    else:
        async with JobEvents(conninfo) as events:
            async for job in follow_job(store, job_id, events):
                console.print(
                    f"{job.status} {job.progress:3d}% {job.progress_message}", highlight=False
                )
                final = job
    assert final is not None
    return final


def print_summary(job: Job, console: Console) -> None:
    """Hosts probed, nodes, services new/refreshed, conflicts and failures by reason."""
    result = job.result or {}
    stats = result.get("stats", {})
    services = result.get("services", {})
    console.print(f"job {job.job_id}: [bold]{job.status}[/]")
    table = Table(show_header=False)
    table.add_row("hosts probed", str(stats.get("hosts_probed", 0)))
    closed = sum(count for key, count in stats.items() if key.startswith("closed_"))
    table.add_row("no kOS port open", str(closed))
    table.add_row("nodes", str(stats.get("nodes", 0)))
    table.add_row("services new", str(services.get("new", 0)))
    table.add_row("services refreshed", str(services.get("refreshed", 0)))
    table.add_row("conflicts", str(result.get("conflict_count", 0)))
    if result.get("mismatches"):
        table.add_row("node_id mismatches", str(len(result["mismatches"])))
    for reason, count in sorted(result.get("failed_probes", {}).items()):
        table.add_row(f"failed: {reason}", str(count))
    console.print(table)
    if job.error:
        console.print(f"[bold red]{job.error['code']}[/]: {job.error['message']}")


def job_as_json(job: Job) -> str:
    """The job as one JSON document."""

    def default(value: Any) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return json.dumps(asdict(job), default=default, indent=2)


# The options of a job's params, shared by the commands that make one.
Depth = Annotated[
    int, typer.Option(min=1, max=8, help="1: the target only; N: follow peers N-1 hops.")
]
Ports = Annotated[
    list[int] | None, typer.Option(min=1, max=65535, help="Port to probe (repeatable).")
]
Protocols = Annotated[list[str] | None, typer.Option(help="http-api, mdns or dns-sd (repeatable).")]


@app.command()
def discover(
    target: Annotated[str, typer.Argument(help="A network (192.168.1.0/24), a domain or a DID.")],
    depth: Depth = 1,
    port: Ports = None,
    protocol: Protocols = None,
    wait: Annotated[bool, typer.Option(help="Run the job here and wait for its end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final job as JSON.")] = False,
    rate: Annotated[
        float | None, typer.Option(min=0, help="Probes started per second (0: no limit).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=4096, help="Probes in flight at once.")
    ] = None,
    mdns_window: Annotated[
        float | None, typer.Option(min=1, max=60, help="Seconds to browse mDNS (default 3).")
    ] = None,
) -> None:
    """Discover the kOS nodes at TARGET and put their services in the map.

    Without --wait the job is queued for a worker (ronin worker or ronin serve); with --wait
    this command runs it, unless a worker claims it first, and exits 0 once it completes.
    With RONIN_URL set, the job goes to that node, and --wait follows its events.
    """
    params = target_params(
        target,
        depth=depth,
        ports=port or [],
        protocols=protocol or [],
        rate=rate,
        concurrency=concurrency,
        mdns_window_s=mdns_window,
    )
    shown = error_console if as_json else console

    async def work(settings: Settings) -> Job:
        if settings.remote_url:
            return await submit_remotely(settings, params, wait=wait, console=shown)
        return await submit_and_wait(settings, params, wait=wait, console=shown)

    job = run(work)
    if as_json:
        print(job_as_json(job))
    elif wait:
        print_summary(job, console)
    else:
        console.print(
            f"queued job {job.job_id}: a worker (ronin worker or ronin serve) runs it; "
            f"ronin jobs follow {job.job_id} shows its progress",
            soft_wrap=True,
        )
    if job.status == "failed":
        raise typer.Exit(1)

"""``ronin discover TARGET``: submit a discovery job and, with ``--wait``, see it through.

With ``--wait`` no server is needed: the command runs the job itself unless a worker claims
it first (then it follows that worker's progress), shows a Rich progress bar on a terminal
and plain lines otherwise, and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ronin.cli.backend import open_backend
from ronin.cli.common import app, console, error_console, fail, modules_loaded, run
from ronin.cli.job_options import Concurrency, Depth, MdnsWindow, Ports, Protocols, Rate
from ronin.cli.signals import Signals
from ronin.cli.views import Update, show_progress
from ronin.config import Settings
from ronin.discovery.param_fields import DEFAULT_DEPTH
from ronin.discovery.params import DEFAULT_PROTOCOLS, KOS_PORT, parse_params, target_from_text
from ronin.discovery.policy import ScopePolicy
from ronin.errors import Interrupted, JobFinished, RoninError
from ronin.jobs.follow import JobEvents, follow_job
from ronin.node import load_worker_stack, open_node
from ronin.store.job_models import Job, JobResult
from ronin.store.jobs import JobStore

PROMPT_TIMEOUT_S = 15.0


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
    if wait:  # while the embedded server starts (ronin.cli.head_start):
        _start_sweep_processes_for(params, ScopePolicy.from_settings(settings))
        load_worker_stack()
        modules_loaded()
    async with open_node(settings) as node:
        store = node.jobs
        job, _ = await node.submit(params)
        if not wait:
            return job
        worker = node.worker(concurrency=1)
        with Signals() as signals:
            runner = asyncio.create_task(worker.run_one(job.job_id), name="run own job")
            shown = asyncio.create_task(_show(node.database.conninfo, store, job.job_id, console))
            try:
                await signals.until(shown)
            except BaseException:
                shown.cancel()
                worker.release_all()
                await asyncio.gather(shown, runner, return_exceptions=True)
                raise
            if shown.done():  # the job ended (or following it failed)
                await runner
                return shown.result()
            shown.cancel()
            await asyncio.gather(shown, return_exceptions=True)
            worker.release_all()  # back to the queue, the attempt not spent
            return await _after_interrupt(store, job.job_id, signals, runner)


def _start_sweep_processes_for(params: dict[str, Any], policy: ScopePolicy) -> None:
    """Start the sweep processes now if the job's sweep will use them: their interpreters
    start beside this one's imports, not when the sweep begins."""
    from ronin.discovery.sweep import start_sweep_processes, uses_sweep_processes

    try:
        job = parse_params(params)
        if job.network is not None:
            policy.check_target(job.network)
    except RoninError:
        return  # refused when submitted, and no process started for it
    if job.network is not None and uses_sweep_processes(job.network, job.ports):
        start_sweep_processes()


async def _after_interrupt(
    store: JobStore, job_id: uuid.UUID, signals: Signals, runner: asyncio.Task[bool]
) -> Job:
    """Ctrl-C on a terminal asks whether to cancel the job; otherwise it is left to the queue,
    and the command says exactly where it is and how to cancel it."""
    ask = signals.received[0] == signal.SIGINT and sys.stdin.isatty()
    cancel = ask and await _ask_to_cancel(job_id, signals)
    await runner  # bounded: the job is being handed back
    job = await store.get(job_id)
    if job.finished:
        return job
    if not cancel:
        raise Interrupted(left_to_the_queue(job))
    with contextlib.suppress(JobFinished):  # it ended meanwhile: the summary says how
        await store.cancel(job_id)
    job = await store.get(job_id)
    if job.finished:
        return job
    raise Interrupted(
        f"interrupted: job {job_id} runs on worker {job.worker_id}, which was asked to stop it",
        field="job_id",
    )


def left_to_the_queue(job: Job) -> str:
    """What became of a job this command stopped waiting for, and how to cancel it."""
    cancel = f"`ronin jobs cancel {job.job_id}` cancels it"
    if job.status == "pending":
        return (
            f"interrupted: the job {job.job_id} was handed back to the queue and will run "
            f"when a worker starts; {cancel}"
        )
    return (
        f"interrupted: stopped waiting for job {job.job_id}, which goes on running on "
        f"worker {job.worker_id}; {cancel}"
    )


async def _ask_to_cancel(job_id: uuid.UUID, signals: Signals) -> bool:
    """Ask on the terminal, for a bounded time; no answer, Enter or another Ctrl-C: yes."""
    error_console.print(
        f"Cancel job {job_id}? [Y/n] (yes in {PROMPT_TIMEOUT_S:.0f} s) ",
        end="",
        markup=False,
        highlight=False,
    )
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        line = sys.stdin.readline()  # a terminal hands over whole lines
        if not answer.done():
            answer.set_result(line)

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        await signals.until(answer, timeout_s=PROMPT_TIMEOUT_S)
    finally:
        loop.remove_reader(sys.stdin.fileno())
    if not answer.done():
        answer.cancel()
        error_console.print()
        return True
    return answer.result().strip().lower() not in {"n", "no"}


async def submit_remotely(
    settings: Settings, params: dict[str, Any], *, wait: bool, console: Console
) -> Job:
    """Submit to the node at ``RONIN_URL``; with ``wait``, follow its events to the end."""
    async with open_backend(settings) as backend:
        job = await backend.submit(params)
        if not wait:
            return job
        with Signals() as signals:
            shown = asyncio.create_task(show_progress(backend.follow(job.job_id), console))
            try:
                await signals.until(shown)
            finally:
                if not shown.done():
                    shown.cancel()
                await asyncio.gather(shown, return_exceptions=True)
        if shown.cancelled():
            raise Interrupted(
                f"interrupted: stopped following job {job.job_id}, which goes on at "
                f"{settings.remote_url}; `ronin jobs cancel {job.job_id}` cancels it"
            )
        shown.result()
        return await backend.job(job.job_id)


async def _show(conninfo: str, store: JobStore, job_id: uuid.UUID, console: Console) -> Job:
    """Follow the job to its end: a progress bar on a terminal, plain lines elsewhere."""
    async with JobEvents(conninfo) as events:
        await show_progress(_updates(follow_job(store, job_id, events)), console)
    return await store.get(job_id)


async def _updates(jobs: AsyncIterator[Job]) -> AsyncIterator[Update]:
    async for job in jobs:
        yield job.status, job.progress, job.progress_message


def print_summary(job: Job, console: Console) -> None:
    """The job's status; what it counted (if it probed anything); its error, once."""
    console.print(f"job {job.job_id}: [bold]{job.status}[/]", highlight=False)
    rows = _tallies(job.summary())
    if any(count for _, count in rows):
        table = Table(show_header=False)
        for label, count in rows:
            table.add_row(label, str(count))
        console.print(table)
    if job.error:
        console.print(
            f"[bold red]{escape(job.error['code'])}[/]: {escape(job.error['message'])}",
            highlight=False,
        )


def _tallies(result: JobResult) -> list[tuple[str, int]]:
    """Hosts probed, nodes, services new/refreshed, conflicts and failures by reason."""
    rows = [
        ("hosts probed", result.hosts_probed),
        ("no kOS port open", result.ports_closed),
        ("nodes", result.nodes),
        ("services new", result.found.new),
        ("services refreshed", result.found.refreshed),
        ("conflicts", result.conflict_count),
    ]
    if result.mismatches:
        rows.append(("node_id mismatches", len(result.mismatches)))
    rows += [(f"failed: {reason}", n) for reason, n in sorted(result.failed_probes.items())]
    return rows


def job_as_json(job: Job) -> str:
    """The job as one JSON document."""

    def default(value: Any) -> str:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return json.dumps(asdict(job), default=default, indent=2)


@app.command()
def discover(
    target: Annotated[str, typer.Argument(help="A network (192.168.1.0/24), a domain or a DID.")],
    depth: Depth = DEFAULT_DEPTH,
    port: Ports = None,
    protocol: Protocols = None,
    wait: Annotated[bool, typer.Option(help="Run the job here and wait for its end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final job as JSON.")] = False,
    rate: Rate = None,
    concurrency: Concurrency = None,
    mdns_window: MdnsWindow = None,
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

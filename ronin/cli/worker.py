"""``ronin worker``: run jobs from the shared queue."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from ronin.cli.common import app, run, service_map
from ronin.cli.logs import log_at_info
from ronin.config import Settings
from ronin.jobs.discovery_executor import discovery_executor
from ronin.jobs.executor import load_executor
from ronin.jobs.worker import Worker, WorkerOptions
from ronin.store.database import open_database
from ronin.store.jobs import JobStore


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Jobs run at once.")] = 4,
    executor: Annotated[
        str | None, typer.Option(hidden=True, help="module:attribute of a test executor.")
    ] = None,
) -> None:
    """Run jobs from the shared queue until SIGTERM/SIGINT (a second one skips the grace).

    Logs each job's start and end to stderr.
    """
    log_at_info()

    async def work(settings: Settings) -> None:
        run_job = load_executor(executor) if executor else discovery_executor(settings)
        async with await open_database(settings, for_worker=True) as database:
            runner = Worker(
                conninfo=database.conninfo,
                store=JobStore(database.pool),
                services=service_map(database, settings),
                executor=run_job,
                options=WorkerOptions.from_settings(settings, concurrency),
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal() -> None:
                if stop.is_set():
                    runner.hurry()
                stop.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, on_signal)
            await runner.run(stop)

    run(work)

"""``ronin worker``: run jobs from the shared queue."""

from __future__ import annotations

from typing import Annotated

import typer

from ronin.cli.common import app, run
from ronin.cli.logs import log_at_info
from ronin.cli.signals import Signals
from ronin.config import Settings
from ronin.jobs.verifying import run_beside
from ronin.node import job_executor, open_node


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Jobs run at once.")] = 4,
    executor: Annotated[
        str | None, typer.Option(hidden=True, help="module:attribute of a test executor.")
    ] = None,
) -> None:
    """Run jobs from the shared queue until SIGTERM/SIGINT (a second one skips the grace).

    Beside the jobs, re-checks the map's nodes (RONIN_VERIFY_INTERVAL_S; 0: never). Logs each
    job's start and end to stderr.
    """
    log_at_info()

    async def work(settings: Settings) -> None:
        run_job = job_executor(settings, executor)  # a bad one fails before any connection
        async with open_node(settings, for_worker=True) as node, node.verifier() as verifier:
            runner = node.worker(concurrency=concurrency, executor=run_job)
            signals = Signals(on_hurry=runner.hurry).install()
            await run_beside(runner.run(signals.stop), verifier, signals.stop)

    run(work)

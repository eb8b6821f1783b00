"""``ronin jobs``: what the queue holds, and what an operator does to a job."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.table import Table

from ronin.cli.backend import open_backend
from ronin.cli.common import as_json, console, jobs_app, run
from ronin.cli.discover import print_summary
from ronin.config import Settings
from ronin.errors import InvalidValue
from ronin.store.job_models import JOB_STATUSES, Attempt, Job, JobPage


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidValue(f"{text!r} is not a job id", field="job_id") from None


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option(help="pending, running, completed or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List jobs, newest first."""

    async def work(settings: Settings) -> JobPage:
        if status is not None and status not in JOB_STATUSES:
            raise InvalidValue(f"status must be one of {', '.join(JOB_STATUSES)}", field="status")
        async with open_backend(settings) as backend:
            return await backend.list_jobs(status, limit, cursor)

    page = run(work)
    if json_output or not console.is_terminal:
        print(as_json({"items": page.items, "next_cursor": page.next_cursor}))
        return
    table = Table("job", "status", "progress", "target", "created", "attempts")
    for job in page.items:
        target = job.params.get("target", {})
        table.add_row(
            str(job.job_id),
            job.status,
            f"{job.progress}%",
            str(target.get("value", "")),
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(job.attempts),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one job: its state, result and every attempt."""

    async def work(settings: Settings) -> tuple[Job, list[Attempt]]:
        async with open_backend(settings) as backend:
            job = await backend.job(_job_id(job_id))
            return job, await backend.attempts(job.job_id)

    job, attempts = run(work)
    if json_output or not console.is_terminal:
        print(as_json({"job": job, "attempts": attempts}))
        return
    print_summary(job, console)
    for attempt in attempts:
        error = f" {attempt.error['code']}: {attempt.error['message']}" if attempt.error else ""
        console.print(
            f"attempt {attempt.attempt} on {attempt.worker_id}: {attempt.outcome}{error}",
            highlight=False,
        )


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a job: a pending one ends now, a running one is told to stop."""

    async def work(settings: Settings) -> Job:
        async with open_backend(settings) as backend:
            return await backend.cancel(_job_id(job_id))

    job = run(work)
    console.print("cancelled" if job.finished else "asked its worker to stop")


@jobs_app.command("follow")
def jobs_follow(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Print a job's progress as it happens, until it ends; exit 1 if it fails."""

    async def work(settings: Settings) -> Job:
        async with open_backend(settings) as backend:
            async for status, progress, message in backend.follow(_job_id(job_id)):
                console.print(f"{status} {progress:3d}% {message}", highlight=False)
            return await backend.job(_job_id(job_id))

    if run(work).status == "failed":
        raise typer.Exit(1)

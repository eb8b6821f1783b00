"""``ronin jobs``: what the queue holds, and what an operator does to a job."""

from __future__ import annotations

from typing import Annotated

import typer

from ronin.cli import views
from ronin.cli.backend import open_backend, resolve_job_id
from ronin.cli.common import as_json, console, jobs_app, run
from ronin.cli.views import WHEN_WIDTH, folded, show_progress, whole, wrapped
from ronin.config import Settings
from ronin.errors import InvalidValue
from ronin.store.job_models import JOB_STATUSES, Attempt, Job, JobPage

JOB_ID_HELP = "The job's id, or its start (at least 4 hex digits, as tables show it)."
JobRef = Annotated[str, typer.Argument(help=JOB_ID_HELP)]


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
    table = views.table(
        whole("job"),
        wrapped("status"),
        folded("target"),
        wrapped("created", min_width=WHEN_WIDTH),
        wrapped("tries", justify="right"),
    )
    for job in page.items:
        target = job.params.get("target", {})
        table.add_row(
            str(job.job_id),
            f"{job.status} {job.progress}%" if job.status == "running" else job.status,
            str(target.get("value", "")),
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(job.attempts),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


@jobs_app.command("show")
def jobs_show(
    job_id: JobRef,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one job: its state, result and every attempt."""

    async def work(settings: Settings) -> tuple[Job, list[Attempt]]:
        async with open_backend(settings) as backend:
            job = await backend.job(await resolve_job_id(backend, job_id))
            return job, await backend.attempts(job.job_id)

    job, attempts = run(work)
    if json_output or not console.is_terminal:
        print(as_json({"job": job, "attempts": attempts}))
        return
    from ronin.cli.discover import print_summary  # the discovery stack: not for `jobs list`

    print_summary(job, console)
    for attempt in attempts:
        # The job's own error is printed once, in the summary; an attempt shows only its own.
        own = attempt.error if attempt.error != job.error else None
        error = f" {own['code']}: {own['message']}" if own else ""
        console.print(
            f"attempt {attempt.attempt} on {attempt.worker_id}: {attempt.outcome}{error}",
            highlight=False,
        )


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobRef) -> None:
    """Cancel a job: a pending one ends now, a running one is told to stop."""

    async def work(settings: Settings) -> Job:
        async with open_backend(settings) as backend:
            return await backend.cancel(await resolve_job_id(backend, job_id))

    job = run(work)
    done = "cancelled" if job.finished else "asked its worker to stop"
    console.print(f"job {job.job_id}: {done}", highlight=False)


@jobs_app.command("follow")
def jobs_follow(job_id: JobRef) -> None:
    """Show a job's progress as it happens, until it ends; exit 1 if it fails."""

    async def work(settings: Settings) -> Job:
        async with open_backend(settings) as backend:
            found = await resolve_job_id(backend, job_id)
            await show_progress(backend.follow(found), console)
            return await backend.job(found)

    job = run(work)
    from ronin.cli.discover import print_summary  # the discovery stack: not for `jobs list`

    print_summary(job, console)
    if job.status == "failed":
        raise typer.Exit(1)

"""``ronin watch``: the changes to the map as they happen (PROTOCOL.md section 9).

On the database directly, or through ``RONIN_URL``; either way it resumes where it was after
a lost connection. stdout holds the changes and nothing else (a line each on a terminal, the
change records as JSON lines otherwise); where it starts and stops goes to stderr, with the
cursor to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from ronin.cli.backend import open_backend
from ronin.cli.common import app, console, error_console, run
from ronin.cli.signals import Signals
from ronin.config import Settings
from ronin.store.changes import ChangeFilter, parse_cursor

TYPE_STYLES = {
    "service_added": "green",
    "service_changed": "yellow",
    "service_state": "cyan",
    "service_removed": "red",
}
STATE_STYLES = {"alive": "green", "suspect": "yellow", "gone": "red", "unverified": "magenta"}
STOP_RETRY_S = 0.5
#: The widest change type, so the columns after it line up.
TYPE_WIDTH = max(map(len, TYPE_STYLES))


@app.command()
def watch(
    since: Annotated[
        str | None,
        typer.Option(help="Start after this cursor (a change's, or one ronin watch printed)."),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option(help="Changes of services holding this capability (repeatable: all of them)."),
    ] = None,
    node_class: Annotated[str | None, typer.Option("--class", help="Node class.")] = None,
    node: Annotated[str | None, typer.Option(help="Node id (a DID).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Print changes to the map as they happen, until Ctrl-C (or SIGTERM), from now or --since.

    A line each on a terminal; otherwise (or with --json) each change record as one line of
    JSON, as GET /v1/changes/stream sends it. A lost connection is reopened and the changes
    resume where they were. A cursor older than the changes kept exits 1, naming the current
    one.
    """
    as_json = json_output or not console.is_terminal
    position = Position()

    async def work(settings: Settings) -> None:
        if since is not None:
            parse_cursor(since)  # a typo is refused before any connection
        where = ChangeFilter(
            capabilities=tuple(capability or ()), node_class=node_class, node_id=node
        )
        with Signals() as signals:
            watching = asyncio.create_task(_watch(settings, since, where, as_json, position))
            await signals.until(watching)
            if watching.done():
                watching.result()
            else:
                await _stop(watching)
        if position.cursor is not None:
            _status(f"stopped; resume with --since {position.cursor}")

    run(work)


@dataclass
class Position:
    """The cursor of the last change printed (or where the watch started): resume after it."""

    cursor: str | None = None


async def _watch(
    settings: Settings, since: str | None, where: ChangeFilter, as_json: bool, position: Position
) -> None:
    """Print each change as it comes, keeping ``position`` at the last one."""
    async with open_backend(settings) as backend:
        start = since if since is not None else await backend.change_cursor()
        position.cursor = start
        _status(f"watching the changes after cursor {start} (Ctrl-C to stop)")
        try:
            async for record in backend.watch(start, where):
                change = orjson.loads(record)
                if as_json:
                    _write(record)
                else:
                    console.print(line(change), highlight=False, soft_wrap=True)
                position.cursor = str(change.get("cursor", position.cursor))
        except BrokenPipeError:
            # The reader went (``| head``): stop quietly, and keep Python's exit from writing
            # into the closed pipe again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends: a cancellation can be lost in a query cut short."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_RETRY_S)
    with contextlib.suppress(asyncio.CancelledError, BrokenPipeError):
        task.result()


def line(change: dict[str, Any]) -> str:
    """One change as a terminal line (Rich markup): when, what, which service, on which node."""
    kind = str(change.get("type", ""))
    at = str(change.get("at", ""))
    with contextlib.suppress(ValueError):
        at = datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S")
    service = change.get("service") or {}
    node = (
        f"{change.get('node_id', '')} ({change.get('node_class', service.get('node_class', ''))})"
    )
    if kind == "service_state":
        before, after = str(change.get("from")), str(change.get("to"))
        detail = (
            f"[{STATE_STYLES.get(before, 'default')}]{escape(before)}[/] -> "
            f"[bold {STATE_STYLES.get(after, 'default')}]{escape(after)}[/]"
        )
    elif kind in ("service_added", "service_changed"):
        detail = escape(str(service.get("endpoint", "")))
    else:
        detail = ""
    style = TYPE_STYLES.get(kind, "default")
    return (
        f"[dim]{escape(at)}[/]  [{style}]{escape(kind.ljust(TYPE_WIDTH))}[/]  "
        f"[bold]{escape(str(change.get('service_id', '')))}[/]  {escape(node)}  {detail}"
    ).rstrip()


def _write(record: bytes) -> None:
    """One JSON line on stdout, flushed, so a pipe reads each change as it comes."""
    sys.stdout.buffer.write(record + b"\n")
    sys.stdout.flush()


def _status(message: str) -> None:
    error_console.print(f"ronin watch: {message}", highlight=False, soft_wrap=True)

"""How commands show things on a terminal: tables that keep ids whole, and progress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from rich import box
from rich.table import Column, Table

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod

#: (status, progress in percent, message): one update of a job as it runs.
Update = tuple[str, int, str]
FOLDED_MIN_WIDTH = 12
#: A date and time (2025-01-31 12:00:00) wraps at its space, not inside the date.
WHEN_WIDTH = 10


def table(*columns: Column) -> Table:
    """A table that spends the width of a terminal on its columns, not on its borders."""
    return Table(
        *columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )


def whole(header: str) -> Column:
    """A column of job or schedule ids: always whole, on one line, to copy and paste."""
    return Column(header, no_wrap=True, overflow="fold")


def folded(header: str) -> Column:
    """A column of DIDs, URLs or targets: folded onto more lines when long, never cut."""
    return Column(header, overflow="fold", min_width=FOLDED_MIN_WIDTH)


def wrapped(
    header: str, *, min_width: int | None = None, justify: JustifyMethod = "left"
) -> Column:
    """Any other column: it wraps first when the terminal is narrow."""
    return Column(header, overflow="fold", min_width=min_width, justify=justify)


async def show_progress(updates: AsyncIterator[Update], console: Console) -> None:
    """A progress bar with its ETA on a terminal; one plain line per update elsewhere."""
    if not console.is_terminal:
        async for status, progress, message in updates:
            console.print(f"{status} {progress:3d}% {message}", highlight=False)
        return
    from rich.progress import (  # here: only a progress bar needs it
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("discovering", total=100, message="")
        async for status, progress, message in updates:
            bar.update(task, completed=progress, message=message, description=status)

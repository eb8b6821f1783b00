"""Executors for the benchmarks: jobs that cost nothing but the queue's own work."""

from __future__ import annotations

from typing import Any

from ronin.jobs.context import JobContext


async def noop(context: JobContext) -> dict[str, Any] | None:
    """Do nothing and succeed: what is measured is claiming, leasing and finishing."""
    return None

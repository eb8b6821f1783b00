"""A test-only executor that proves the job machinery before discovery exists.

The job's target says what to do: ``did:kos:test:<behaviour>[:<argument>]``.

- ``noop``: record one service named after the job, and finish.
- ``steps:<n>``: n steps of 0.2 s, a checkpoint after each; a resumed attempt skips the steps
  its predecessor finished and reports where it resumed.
- ``transient:<n>``: fail with a lost connection on the first n attempts, then finish.
- ``permanent``: fail with SCAN_FAILED.
- ``hang``: wait forever (until cancelled, timed out or shut down).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from ronin.errors import ScanFailed
from ronin.jobs.context import JobContext
from ronin.store.models import Sighting

STEP_S = 0.2


def target(behaviour: str) -> dict[str, Any]:
    """Job params that ask this executor for ``behaviour``."""
    return {
        "target": {"type": "did", "value": f"did:kos:test:{behaviour}"},
        "protocols": ["http-api"],
    }


def marker(context: JobContext) -> Sighting:
    """The one service a job records: a job run twice cannot make two."""
    return Sighting(
        service_id=f"did:kos:service:{context.job_id}",
        node_id=f"did:kos:test:{context.job_id}",
        node_class="Ronin",
        endpoint="http://127.0.0.1:30437/",
        capabilities=("test",),
        seen_at=datetime.now(UTC),
        metadata={"job_id": str(context.job_id), "attempt": context.job.attempt},
    )


async def run(context: JobContext) -> dict[str, Any] | None:
    """Do what the job's target asks."""
    behaviour, _, argument = context.params.target.removeprefix("did:kos:test:").partition(":")
    if behaviour == "noop":
        await context.record([marker(context)])
        return {"attempt": context.job.attempt}
    if behaviour == "steps":
        first = int(context.resume or 0)
        for step in range(first, int(argument)):
            await asyncio.sleep(STEP_S)
            await context.progress(
                100 * (step + 1) // int(argument), f"step {step + 1}", resume=step + 1, force=True
            )
        await context.record([marker(context)])
        return {"resumed_from": first}
    if behaviour == "transient":
        if context.job.attempt <= int(argument):
            raise ConnectionResetError("lost the connection (on purpose)")
        await context.record([marker(context)])
        return None
    if behaviour == "permanent":
        context.probe_failed("refused")
        raise ScanFailed("nothing to scan here (on purpose)")
    if behaviour == "hang":
        await asyncio.Event().wait()
    raise ValueError(f"unknown test behaviour {behaviour!r}")

"""A job's result is typed, and stored with the keys PROTOCOL.md 4-5, the API and KLF show."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from ronin.discovery.crawl_state import CrawlReport, CrawlState
from ronin.jobs.context import JobContext
from ronin.store.job_models import (
    ClaimedJob,
    JobResult,
    Mismatch,
    ReportedConflict,
    ServiceCounts,
)

CONFLICT = ReportedConflict("did:kos:service:a", "did:kos:griot:b", "did:kos:griot:a")
MISMATCH = Mismatch("did:kos:griot:x", "did:kos:griot:y", "http://127.0.0.1:30437/")
FULL = JobResult(
    conflicts=(CONFLICT,),
    conflict_count=3,
    failed_probes={"refused": 2, "tls_error": 1},
    stats={"hosts_probed": 9, "nodes": 2, "closed_refused": 4, "closed_timeout": 3},
    mismatches=(MISMATCH,),
    services=ServiceCounts(new=5, refreshed=1),
    extra={"attempt": 2},
)


def stored(result: JobResult) -> dict[str, Any]:
    """The result as the database gives it back: JSON, nothing else."""
    return cast(dict[str, Any], json.loads(json.dumps(result.to_json())))


def context(checkpoint: dict[str, Any] | None = None) -> JobContext:
    job = ClaimedJob(
        job_id=uuid.uuid4(),
        params={},
        lease_token=uuid.uuid4(),
        attempt=1,
        max_attempts=1,
        checkpoint=checkpoint,
        cancel_requested=False,
        lease_expires_at=datetime.now(UTC),
    )
    return JobContext(job, cast(Any, None), cast(Any, None), cast(Any, None))


def test_a_result_round_trips_through_its_stored_json() -> None:
    assert JobResult.from_json(stored(FULL)) == FULL


def test_the_stored_keys_and_their_shapes() -> None:
    data = stored(FULL)
    assert data == {
        "conflicts": [
            {
                "service_id": "did:kos:service:a",
                "claimed_by": "did:kos:griot:b",
                "owner": "did:kos:griot:a",
            }
        ],
        "conflict_count": 3,
        "failed_probes": {"refused": 2, "tls_error": 1},
        "stats": {"hosts_probed": 9, "nodes": 2, "closed_refused": 4, "closed_timeout": 3},
        "mismatches": [
            {"did": "did:kos:griot:x", "node_id": "did:kos:griot:y", "url": MISMATCH.url}
        ],
        "services": {"new": 5, "refreshed": 1},
        "attempt": 2,
    }


def test_a_discovery_result_has_the_keys_it_always_had() -> None:
    """The crawl's stats and mismatches beside the job's own counts; the store adds services."""
    state = CrawlState(stats={"hosts_probed": 4, "nodes": 1, "closed_refused": 3})
    state.mismatches.append(MISMATCH.to_json())
    ctx = context()
    ctx.probe_failed("refused")
    data = ctx.result(state.report()).to_json()
    assert data == {
        "conflicts": [],
        "conflict_count": 0,
        "failed_probes": {"refused": 1},
        "stats": {"hosts_probed": 4, "nodes": 1, "closed_refused": 3},
        "mismatches": [MISMATCH.to_json()],
    }


def test_an_executor_of_its_own_keeps_its_fields_and_reports_no_stats() -> None:
    assert context().result({"attempt": 1}).to_json() == {
        "conflicts": [],
        "conflict_count": 0,
        "failed_probes": {},
        "attempt": 1,
    }
    assert set(context().result(None).to_json()) == {"conflicts", "conflict_count", "failed_probes"}


def test_extra_fields_are_kept_apart_from_the_typed_ones() -> None:
    data = {"conflicts": [], "conflict_count": 0, "failed_probes": {}, "resumed_from": 3}
    data |= {"services": {"new": 1, "refreshed": 0}}
    result = JobResult.from_json(data)
    assert result.extra == {"resumed_from": 3}
    assert result.services == ServiceCounts(1, 0)
    assert result.stats is None
    assert result.mismatches is None
    assert result.to_json() == data


def test_an_old_result_missing_keys_reads_with_zeros() -> None:
    old = JobResult.from_json({"services": {"new": 2}})
    assert old.found == ServiceCounts(new=2, refreshed=0)
    assert (old.conflicts, old.conflict_count, dict(old.failed_probes)) == ((), 0, {})
    assert (old.hosts_probed, old.nodes, old.ports_closed) == (0, 0, 0)
    assert old.mismatches is None
    assert old.extra == {}
    none = JobResult.from_json(None)
    assert none == JobResult()
    assert none.found.total == 0


def test_the_counts_a_summary_reads() -> None:
    assert (FULL.hosts_probed, FULL.nodes, FULL.ports_closed) == (9, 2, 7)
    assert FULL.found.total == 6


def test_conflicts_resume_from_the_checkpoint_typed_and_counted_once() -> None:
    tally = {"failures": {"refused": 1}, "conflicts": [CONFLICT.to_json()], "conflict_count": 1}
    ctx = context({"resume": None, "tally": tally})
    assert ctx.result(None) == JobResult(
        conflicts=(CONFLICT,), conflict_count=1, failed_probes={"refused": 1}
    )
    assert ctx._tally() == tally


def test_a_crawl_report_is_a_copy_of_its_state() -> None:
    state = CrawlState()
    report = state.report()
    state.stats["nodes"] += 1
    assert report == CrawlReport({"hosts_probed": 0, "nodes": 0}, ())


def test_the_cli_summary_reads_the_typed_result() -> None:
    from rich.console import Console

    from ronin.cli.discover import print_summary
    from ronin.store.job_models import Job

    now = datetime.now(UTC)
    job = Job(
        job_id=uuid.uuid4(),
        status="completed",
        params={},
        created_at=now,
        completed_at=now,
        attempts=1,
        max_attempts=1,
        run_after=None,
        worker_id=None,
        lease_expires_at=None,
        cancel_requested=False,
        progress=100,
        progress_message="done",
        error=None,
        result=stored(FULL),
        idempotency_key=None,
        schedule_id=None,
        started_at=now,
        updated_at=now,
    )
    console = Console(record=True, width=80)
    print_summary(job, console)
    rows = [line.split("│") for line in console.export_text().splitlines()]
    counts = {row[1].strip(): row[2].strip() for row in rows if len(row) == 4}
    assert counts["hosts probed"] == "9"
    assert counts["no kOS port open"] == "7"
    assert counts["nodes"] == "2"
    assert counts["services new"] == "5"
    assert counts["services refreshed"] == "1"
    assert counts["conflicts"] == "3"
    assert counts["node_id mismatches"] == "1"
    assert counts["failed: refused"] == "2"
    assert counts["failed: tls_error"] == "1"

"""Prometheus metrics of this process: what its workers and probes did.

Counts that live in the database (jobs by status, services in the map and by state) are read
when ``/metrics`` is scraped, so every node reports the same, whichever process did the work.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Gauge("ronin_jobs", "Discovery jobs in the database, by status.", ["status"])
SERVICES = Gauge("ronin_services", "Services in the map.")
SERVICES_BY_STATE = Gauge(
    "ronin_services_by_state",
    "Services in the map, by liveness state (alive, suspect, gone, unverified).",
    ["state"],
)
CLAIM_SECONDS = Histogram(
    "ronin_job_claim_seconds",
    "Time one claim statement of this process's workers took.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
JOBS_CLAIMED = Counter("ronin_jobs_claimed", "Jobs claimed by this process's workers.")
PROBES = Counter(
    "ronin_probes",
    "Descriptor probes by this process: outcome ok or failed, and the failure's reason.",
    ["outcome", "reason"],
)
PROBE_SECONDS = Histogram(
    "ronin_probe_seconds",
    "Time one descriptor probe took, whatever its outcome.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def probe_failed(reason: str) -> None:
    """Count a failed probe; the reason's detail after ``:`` is dropped to bound the labels."""
    PROBES.labels("failed", reason.split(":", 1)[0]).inc()


def probe_succeeded() -> None:
    """Count a probe that returned a valid descriptor."""
    PROBES.labels("ok", "").inc()


LIVENESS_TRANSITIONS = Counter(
    "ronin_liveness_transitions",
    "Service state changes made by this process's verifier, by state left and state entered.",
    ["from", "to"],
)
LIVENESS_GUARD_TRIPS = Counter(
    "ronin_liveness_guard_trips",
    "Times this process's verifier began to hold the partition guard (once per episode).",
)
LIVENESS_CHECKS = Counter(
    "ronin_liveness_checks",
    "Node checks by this process's verifier: outcome answered, or the failure's reason.",
    ["outcome"],
)


def liveness_checked(outcome: str) -> None:
    """Count a node check; a failure reason's detail after ``:`` is dropped to bound labels."""
    LIVENESS_CHECKS.labels(outcome.split(":", 1)[0]).inc()


CHANGE_STREAMS = Gauge("ronin_change_streams", "Change-feed streams (SSE) open in this process.")
CHANGE_STREAM_LAG = Histogram(
    "ronin_change_stream_lag_seconds",
    "From a change's commit to its batch being sent on a stream (the newest of the batch).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHANGES_WRITTEN = Gauge(
    "ronin_changes_written",
    "Changes ever written to the map's change feed, by type (kept by the database, so the "
    "same on every node sharing it; read at each scrape).",
    ["type"],
)

"""KLF messages about discovery jobs (PROTOCOL.md section 5): what a job looks like on the
wire to another kOS node.

``TASK_PROGRESS`` while a job runs, ``TASK_RESPONSE`` once it ends. A pending job has no
message: the protocol gives ``TASK_PROGRESS`` the status ``running`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ronin.store.job_models import FoundService, Job

TASK_REQUEST = "TASK_REQUEST"
TASK_PROGRESS = "TASK_PROGRESS"
TASK_RESPONSE = "TASK_RESPONSE"
RUN_DISCOVERY_JOB = "run_discovery_job"
#: A TASK_RESPONSE lists at most this many services; ``services_found_total`` says how many
#: there were and the job's results route pages through all of them.
MAX_SERVICES_IN_RESPONSE = 1_000


def envelope(kind: str, sender: str, recipient: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A KLF message: ``type``, ``from``, ``to``, ``payload``."""
    return {"type": kind, "from": sender, "to": recipient, "payload": payload}


def progress_payload(job: Job, message: str | None = None) -> dict[str, Any]:
    """The payload of a ``TASK_PROGRESS`` about ``job``."""
    return {
        "task_name": RUN_DISCOVERY_JOB,
        "job_id": str(job.job_id),
        "status": "running",
        "progress": job.progress,
        "message": job.progress_message if message is None else message,
    }


def response_payload(job: Job, found: Sequence[FoundService], total: int) -> dict[str, Any]:
    """The payload of the ``TASK_RESPONSE`` of a finished job."""
    payload: dict[str, Any] = {
        "task_name": RUN_DISCOVERY_JOB,
        "job_id": str(job.job_id),
        "status": job.status,
    }
    if job.status == "completed":
        payload["result"] = {
            **(job.result or {}),
            "services_found": [_service(item) for item in found],
            "services_found_total": total,
        }
    else:
        payload["error"] = job.error or {"code": "SCAN_FAILED", "message": "the job failed"}
        if job.result:
            payload["result"] = job.result
    return payload


def _service(item: FoundService) -> dict[str, Any]:
    service = item.service
    return {
        "service_id": service.service_id,
        "node_id": service.node_id,
        "node_class": service.node_class,
        "endpoint": service.endpoint,
        "capabilities": service.capabilities,
        "last_seen": service.last_seen.isoformat(),
        "outcome": item.outcome,
    }

"""``/jobs``: the list, one job with its attempts and result, the form that starts a
discovery and the one that cancels a job (both need a write token and this node's pages)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from ronin.api.pages.render import PAGE_HEADERS, render
from ronin.api.pages.session import (
    PageRefused,
    PageSession,
    check_may_write,
    check_same_origin,
    first,
    form_fields,
    require_session,
)
from ronin.api.state import NodeState, node
from ronin.discovery.param_fields import DEFAULT_PROTOCOLS, PROTOCOLS
from ronin.discovery.params import TARGET_TYPES
from ronin.errors import ForbiddenTarget, InvalidValue, JobFinished, NotFound
from ronin.store.job_models import JOB_STATUSES, JobStatus

router = APIRouter(include_in_schema=False)
Node = Annotated[NodeState, Depends(node)]
Session = Annotated[PageSession, Depends(require_session)]
PAGE_SIZE = 25
FOUND_SHOWN = 100


def _form(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The start form's choices and what it was filled with."""
    filled = {"target_type": "network_cidr", "target": "", "depth": "", "protocols": []}
    filled |= values or {}
    if not filled["protocols"]:
        filled["protocols"] = list(DEFAULT_PROTOCOLS)
    return {"target_types": TARGET_TYPES, "protocols": PROTOCOLS, "filled": filled}


async def _list(
    request: Request,
    state: NodeState,
    *,
    status: JobStatus | None,
    cursor: str | None,
    code: int = 200,
    error: str | None = None,
    filled: dict[str, Any] | None = None,
) -> Response:
    try:
        page = await state.jobs.list_jobs(status=status, limit=PAGE_SIZE, cursor=cursor)
    except InvalidValue as exc:
        raise PageRefused(400, "Bad page link", exc.message) from None
    following: list[tuple[str, str]] | None = None
    if page.next_cursor:
        following = [("status", status)] if status else []
        following.append(("cursor", page.next_cursor))
    return render(
        request,
        "jobs.html",
        status=code,
        jobs=page.items,
        next=following,
        shown_status=status,
        statuses=JOB_STATUSES,
        error=error,
        **_form(filled),
    )


@router.get("/jobs")
async def jobs(
    request: Request,
    state: Node,
    session: Session,
    status: JobStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Jobs, newest first, a page at a time, and the form that starts one."""
    return await _list(request, state, status=status, cursor=cursor or None)


@router.post("/jobs")
async def start_job(request: Request, state: Node, session: Session) -> Response:
    """Start a discovery from the form: target type and value, depth, protocols."""
    check_same_origin(request)
    check_may_write(session)
    fields = await form_fields(request)
    filled: dict[str, Any] = {
        "target_type": first(fields, "target_type"),
        "target": first(fields, "target"),
        "depth": first(fields, "depth"),
        "protocols": [p for p in fields.get("protocols", []) if p],
    }
    params: dict[str, Any] = {
        "target": {"type": filled["target_type"], "value": filled["target"]},
        "protocols": filled["protocols"] or list(DEFAULT_PROTOCOLS),
    }
    if filled["depth"]:
        try:
            params["depth"] = int(filled["depth"])
        except ValueError:
            params["depth"] = filled["depth"]  # the params check says what is wrong
    try:
        job, _ = await state.node.submit(params)
    except (InvalidValue, ForbiddenTarget) as exc:
        code = 403 if isinstance(exc, ForbiddenTarget) else 422
        error = f"The job was not started: {exc.message}"
        return await _list(
            request, state, status=None, cursor=None, code=code, error=error, filled=filled
        )
    return RedirectResponse(f"/jobs/{job.job_id}", status_code=303, headers=PAGE_HEADERS)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, state: Node, session: Session) -> Response:
    """One job: its state and progress, its attempts, its result and what it found."""
    ident = _job_id(job_id)
    try:
        job = await state.jobs.get(ident)
    except NotFound:
        raise PageRefused(404, "No such job", f"no job {ident}") from None
    attempts = await state.jobs.attempts(ident)
    found = await state.jobs.found_services(ident, limit=FOUND_SHOWN)
    return render(
        request,
        "job.html",
        job=job,
        result=job.summary(),
        attempts=attempts,
        found=found.items,
        more_found=found.next_cursor is not None,
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str, state: Node, session: Session) -> Response:
    """Cancel a job from its page."""
    check_same_origin(request)
    check_may_write(session)
    ident = _job_id(job_id)
    try:
        await state.jobs.cancel(ident)
    except NotFound:
        raise PageRefused(404, "No such job", f"no job {ident}") from None
    except JobFinished as exc:
        raise PageRefused(409, "Already ended", exc.message) from None
    return RedirectResponse(f"/jobs/{ident}", status_code=303, headers=PAGE_HEADERS)


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise PageRefused(404, "No such job", "a job id is a UUID") from None

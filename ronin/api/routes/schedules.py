"""``/v1/schedules``: recurring discoveries, one job per period."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ronin.api.auth import require_read, require_write
from ronin.api.state import NodeState, node
from ronin.api.wire import SCHEDULE, SCHEDULES, ScheduleRequest, error_responses, json_response
from ronin.store.job_models import Schedule
from ronin.store.storable import check_text

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], dependencies=[Depends(require_read)])
Node = Annotated[NodeState, Depends(node)]


@router.get("", response_model=list[Schedule], responses=error_responses(401, 503))
async def list_schedules(state: Node) -> Response:
    """Every schedule, by name."""
    return json_response(SCHEDULES, await state.jobs.schedules())


@router.post(
    "",
    status_code=201,
    response_model=Schedule,
    dependencies=[Depends(require_write)],
    responses=error_responses(400, 401, 403, 409, 413, 422, 503),
)
async def create_schedule(request: ScheduleRequest, state: Node) -> Response:
    """Run a discovery every ``interval_s`` seconds, the first time now."""
    check_text(request.name, "name")
    schedule = await state.node.add_schedule(request.name, request.params, request.interval_s)
    return json_response(SCHEDULE, schedule, status=201)


@router.delete(
    "/{name_or_id}",
    status_code=204,
    dependencies=[Depends(require_write)],
    responses=error_responses(401, 403, 404, 422, 503),
)
async def remove_schedule(name_or_id: str, state: Node) -> Response:
    """Stop a schedule (by name or id); the jobs it created stay."""
    check_text(name_or_id, "name_or_id")
    await state.jobs.remove_schedule(name_or_id)
    return Response(status_code=204)

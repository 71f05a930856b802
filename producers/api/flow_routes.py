"""The workflow and schedule routes: submit, read, list and cancel workflows; list, pause and resume schedules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from loguru import logger

from producers import workflows
from producers.api.routes import request_key
from producers.api.schemas import ScheduleOut, WorkflowList, WorkflowOut
from producers.api.security import SecuredRoute, principal, secured
from producers.auth.principal import Scope
from producers.requests import WorkflowSubmission
from producers.schedules import schedule_views, set_paused
from producers.submit import Submitter
from producers.workflows import flow_summary, read_workflow, workflow_view

router = APIRouter(route_class=SecuredRoute)


@router.post(
    "/workflows",
    status_code=202,
    response_model=WorkflowOut,
    summary="Submit a chain, group or chord of jobs; 202 once its first steps are confirmed",
    **secured(Scope.JOBS_WRITE),
)
async def submit_workflow(body: WorkflowSubmission, request: Request) -> dict[str, Any]:
    """Store the workflow and every step's job, publish its first steps, and answer with its view."""
    caller = principal(request)
    for given in body.all_steps():
        caller.require_type(given.type)
    key = request_key(request.headers.get("idempotency-key"), body.idempotency_key)
    body = body.model_copy(update={"idempotency_key": key})
    submitter: Submitter = request.app.state.services.submitter
    answer = await workflows.submit_workflow(submitter, body, tenant=caller.tenant, source="api")
    return {**workflow_view(answer), "replayed": answer.replayed}


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut, **secured(Scope.JOBS_READ))
async def get_workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    """Return a workflow: its status, counts, error, and every step with its job."""
    submitter: Submitter = request.app.state.services.submitter
    viewer = principal(request).viewer
    return workflow_view(
        await read_workflow(submitter.store, submitter.sealer, workflow_id, viewer)
    )


@router.get("/workflows", response_model=WorkflowList, **secured(Scope.JOBS_READ))
async def list_workflows(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """List the caller's workflows newest first, without their steps, one page at a time."""
    store = request.app.state.services.submitter.store
    flows, following = await store.list_workflows(
        principal(request).tenant, limit=limit, cursor=cursor
    )
    return {"workflows": [flow_summary(flow) for flow in flows], "next_cursor": following}


@router.delete("/workflows/{workflow_id}", response_model=WorkflowOut, **secured(Scope.JOBS_WRITE))
async def cancel_workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    """Cancel a running workflow: every step not started is cancelled (409 once it ended)."""
    submitter: Submitter = request.app.state.services.submitter
    viewer, now = principal(request).viewer, submitter.clock()
    answer = await workflows.cancel_workflow(
        submitter.store, submitter.sealer, workflow_id, viewer, now
    )
    return workflow_view(answer)


@router.get("/schedules", response_model=list[ScheduleOut], **secured(Scope.JOBS_READ))
async def list_schedules(request: Request) -> list[dict[str, Any]]:
    """List the caller's tenant's schedules: rule, job, next and last runs, whether paused."""
    submitter: Submitter = request.app.state.services.submitter
    tenant = principal(request).tenant
    return await schedule_views(
        submitter.topology, submitter.store, submitter.clock(), tenant=tenant
    )


@router.post(
    "/schedules/{name}/pause",
    response_model=ScheduleOut,
    summary="Pause a schedule: no occurrence fires until it is resumed",
    **secured(Scope.ADMIN),
)
async def pause_schedule(name: str, request: Request) -> dict[str, Any]:
    """Pause the schedule (pausing a paused one changes nothing)."""
    return await _set_paused(request, name, paused=True)


@router.post(
    "/schedules/{name}/resume",
    response_model=ScheduleOut,
    summary="Resume a schedule; what fell due while it was paused never fires",
    **secured(Scope.ADMIN),
)
async def resume_schedule(name: str, request: Request) -> dict[str, Any]:
    """Resume the schedule from now."""
    return await _set_paused(request, name, paused=False)


async def _set_paused(request: Request, name: str, *, paused: bool) -> dict[str, Any]:
    submitter: Submitter = request.app.state.services.submitter
    caller = principal(request)
    topology, store, now = submitter.topology, submitter.store, submitter.clock()
    view = await set_paused(topology, store, name, now, paused=paused, tenant=caller.tenant)
    logger.info("schedule {} {} by {}", name, "paused" if paused else "resumed", caller.id)
    return view

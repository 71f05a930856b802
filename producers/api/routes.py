"""The job routes: submit, submit a batch, get, list, cancel, and watch over WebSockets."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect

from jobstore.model import JobSearch, JobStatus
from producers.api.hub import pump
from producers.api.problems import error_item, error_response
from producers.api.schemas import BatchOut, BatchSubmission, JobList, JobOut
from producers.api.security import SecuredRoute, deny_websocket, principal, secured
from producers.auth.principal import Principal, Scope
from producers.requests import JobSubmission
from producers.submit import JobRequest, Submitted, Submitter
from producers.tenancy import job_view, page_view
from topology.errors import AccessError, JobNotFoundError, JobRejectedError, TaskqError

router = APIRouter(route_class=SecuredRoute)


_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def request_key(header: str | None, field: str | None) -> str | None:
    """Return a request's idempotency key: its ``Idempotency-Key`` header (1-255 printable characters) or field, which must agree."""
    if header is not None and not _KEY.fullmatch(header):
        raise JobRejectedError(
            "the Idempotency-Key header must be 1-255 printable ASCII characters without spaces",
            field="Idempotency-Key",
        )
    if header is not None and field is not None and header != field:
        raise JobRejectedError(
            "the Idempotency-Key header and the idempotency_key field differ; send one",
            field="idempotency_key",
        )
    return field or header


def _to_request(body: JobSubmission, caller: Principal, **key: str | None) -> JobRequest:
    # The schema's fields are the request's (as ``checked_request`` reads them), ``key`` the
    # idempotency key a header gave instead.
    return JobRequest(**(body.__dict__ | key), source="api", tenant=caller.tenant)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    summary="Submit a job; 202 only once the broker confirmed it",
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": r"^[\x21-\x7e]+$",
                },
                "description": "Submit at most once per key (same as the idempotency_key field).",
            }
        ],
        **secured(Scope.JOBS_WRITE)["openapi_extra"],
    },
)
async def submit_job(body: JobSubmission, request: Request) -> Response:
    """Store the job, publish it with confirms, and answer 202 with its id."""
    # The hot path: checks done inline rather than as FastAPI dependencies, each of which
    # costs a resolution step per request (bench/http_ingest.py).
    key = request_key(request.headers.get("idempotency-key"), body.idempotency_key)
    caller = principal(request)
    caller.require_type(body.type)
    service: Submitter = request.app.state.services.submitter
    done = await service.submit(_to_request(body, caller, idempotency_key=key))
    headers = {"Location": f"/jobs/{done.job_id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        _submitted(request, service, body)
    return Response(done.response, status_code=202, media_type="application/json", headers=headers)


@router.post(
    "/jobs/batch",
    status_code=207,
    response_model=BatchOut,
    summary="Submit several jobs with pipelined confirms; per-job results",
    **secured(Scope.JOBS_WRITE),
)
async def submit_batch(body: BatchSubmission, request: Request) -> Response:
    """Publish every job, awaiting the confirms together; report each job's outcome in order."""
    service: Submitter = request.app.state.services.submitter
    caller = principal(request)
    requests: list[JobRequest | TaskqError] = []
    for job in body.jobs:
        try:
            caller.require_type(job.type)
            requests.append(_to_request(job, caller))
        except AccessError as exc:
            requests.append(exc)
    outcomes = await service.submit_many(requests)
    results: list[dict[str, Any]] = []
    accepted = 0
    for job, outcome in zip(body.jobs, outcomes, strict=True):
        if isinstance(outcome, Submitted):
            _submitted(request, service, job)
            accepted += 1
            # The job's view is JSON already: embedded as it is, not parsed and encoded again.
            results.append({"status": 202, "job": orjson.Fragment(outcome.response)})
        else:
            item = error_item(outcome)
            results.append({"status": item["status"], "error": item})
    payload = {"accepted": accepted, "rejected": len(results) - accepted, "results": results}
    return Response(orjson.dumps(payload), status_code=207, media_type="application/json")


def _submitted(request: Request, service: Submitter, job: JobSubmission) -> None:
    """Count a job the broker confirmed, under its group and priority."""
    # Labels come from the topology (group) and a closed set (priority), never from input.
    request.app.state.submitted(service.group_of(job.type), job.priority.value).inc()


@router.get("/jobs/{job_id}", response_model=JobOut, **secured(Scope.JOBS_READ))
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """Return a job's status, attempts, timestamps, last error and result."""
    job = await request.app.state.services.submitter.get(job_id, principal(request).viewer)
    return job_view(job)


@router.get("/jobs", response_model=JobList, **secured(Scope.JOBS_READ))
async def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """List jobs newest first, filtered by status and type, one page at a time."""
    submitter: Submitter = request.app.state.services.submitter
    search = JobSearch(status=status, type=type, limit=limit, cursor=cursor)
    page = await submitter.list_jobs(principal(request).viewer, search)
    return page_view(page)


@router.delete("/jobs/{job_id}", response_model=JobOut, **secured(Scope.JOBS_WRITE))
async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a job that has not started (409 once it has)."""
    services = request.app.state.services
    return job_view(await services.submitter.cancel(job_id, principal(request).viewer))


async def _admitted(websocket: WebSocket) -> Principal | None:
    """Return the caller of a WebSocket the gate let in, after checking its scope; else refuse it."""
    try:
        caller = principal(websocket)
        caller.require(Scope.JOBS_READ)
    except AccessError as exc:
        refusal = error_response(exc)
        await deny_websocket(websocket.scope, websocket.receive, websocket.send, refusal)
        return None
    await websocket.accept(subprotocol=websocket.scope["state"].get("subprotocol"))
    return caller


@router.websocket("/ws/jobs/{job_id}")
async def watch_job(websocket: WebSocket, job_id: str) -> None:
    """Stream a job's status changes, starting with its current state, until it is final."""
    caller = await _admitted(websocket)
    if caller is None:
        return
    services = websocket.app.state.services
    async with services.hub.watch(caller.viewer, job_id=job_id) as watcher:
        try:
            job = await services.submitter.get(job_id, caller.viewer)
        except JobNotFoundError as exc:
            await websocket.close(code=4404, reason=str(exc)[:120])
            return
        current = job_view(job)
        try:
            await websocket.send_json(current)
        except WebSocketDisconnect:
            return
        if JobStatus(current["status"]).terminal:
            await websocket.close()
            return
        await pump(websocket, watcher, final=lambda event: JobStatus(event["status"]).terminal)


@router.websocket("/ws/jobs")
async def watch_jobs(websocket: WebSocket, type: str | None = None) -> None:
    """Stream status changes of the caller's jobs, or of one job type, until the client leaves."""
    caller = await _admitted(websocket)
    if caller is None:
        return
    services = websocket.app.state.services
    async with services.hub.watch(caller.viewer, job_type=type) as watcher:
        await pump(websocket, watcher, final=lambda event: False)

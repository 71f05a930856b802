"""The job routes: submit, submit a batch, get, list, cancel, and watch over WebSockets."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import (
    APIRouter,
    Depends,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.routing import APIRoute

from jobstore.model import JobStatus
from producers.api.problems import PROBLEM, error_item, problem
from producers.api.schemas import (
    BatchOut,
    BatchSubmission,
    JobList,
    JobOut,
    JobSubmission,
    Problem,
)
from producers.submit import JobRequest, Submitted, Submitter
from producers.views import job_view
from topology.errors import JobNotFoundError, JobRejectedError


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by orjson: strict RFC 8259, no NaN, bounded depth."""

    async def json(self) -> Any:
        """Return the parsed body (``orjson.JSONDecodeError`` is a ``json.JSONDecodeError``)."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON bodies are parsed strictly.

    Python's json module accepts NaN, Infinity and a BOM, and raises RecursionError on deep
    nesting; orjson refuses all of them cleanly.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Return the handler, fed with strict-JSON requests."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method == "POST":
                # Before FastAPI reads the body: anything but JSON is refused with 415.
                kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    return unsupported_handler(request, _Unsupported(kind))
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


router = APIRouter(route_class=StrictJsonRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM: {}}}
    for code in (400, 403, 409, 413, 415, 422, 503)
}


async def submitter(request: Request) -> Submitter:
    """Return the app's submitter."""
    return request.app.state.services.submitter  # type: ignore[no-any-return]


class _Unsupported(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)


Service = Annotated[Submitter, Depends(submitter)]
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _to_request(body: JobSubmission, header_key: str | None) -> JobRequest:
    key = body.idempotency_key
    if header_key is not None and key is not None and header_key != key:
        raise JobRejectedError(
            "the Idempotency-Key header and the idempotency_key field differ; send one",
            field="idempotency_key",
        )
    return JobRequest(
        type=body.type,
        payload=body.payload,
        priority=body.priority,
        delay=body.delay,
        run_at=body.run_at,
        max_attempts=body.max_attempts,
        idempotency_key=key or header_key,
        callback_url=body.callback_url,
        correlation_id=body.correlation_id,
        source="api",
    )


def _accepted(done: Submitted) -> Response:
    headers = {"Location": f"/jobs/{done.job_id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(done.response, status_code=202, media_type="application/json", headers=headers)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    responses=ERRORS,
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
        ]
    },
)
async def submit_job(body: JobSubmission, request: Request) -> Response:
    """Store the job, publish it with confirms, and answer 202 with its id."""
    # The hot path: checks done inline rather than as FastAPI dependencies, each of which
    # costs a resolution step per request (bench/http_ingest.py).
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.fullmatch(key):
        raise JobRejectedError(
            "the Idempotency-Key header must be 1-255 printable ASCII characters without spaces",
            field="Idempotency-Key",
        )
    service: Submitter = request.app.state.services.submitter
    done = await service.submit(_to_request(body, key))
    if not done.replayed:
        _submitted(request, service, body)
    return _accepted(done)


@router.post(
    "/jobs/batch",
    status_code=207,
    response_model=BatchOut,
    responses=ERRORS,
    summary="Submit several jobs with pipelined confirms; per-job results",
)
async def submit_batch(body: BatchSubmission, service: Service, request: Request) -> Response:
    """Publish every job, awaiting the confirms together; report each job's outcome in order."""
    outcomes = await service.submit_many([_to_request(job, None) for job in body.jobs])
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
    # Labels come from the topology (group) and a closed set (priority), never from input;
    # the children are cached, as labels() costs more than the increment.
    counters: dict[tuple[str | None, str], Any] = request.app.state.submitted_children
    labels = (service.group_of(job.type), job.priority.value)
    counter = counters.get(labels)
    if counter is None:
        counter = counters[labels] = request.app.state.metrics.submitted.labels(*labels)
    counter.inc()


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: ERRORS[409]})
async def get_job(job_id: str, service: Service) -> dict[str, Any]:
    """Return a job's status, attempts, timestamps, last error and result."""
    return job_view(await service.get(job_id))


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    service: Service,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """List jobs newest first, filtered by status and type, one page at a time."""
    page = await service.store.list_jobs(status=status, type=type, limit=limit, cursor=cursor)
    return {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}


@router.delete(
    "/jobs/{job_id}", response_model=JobOut, responses={404: ERRORS[409], 409: ERRORS[409]}
)
async def cancel_job(job_id: str, service: Service) -> dict[str, Any]:
    """Cancel a job that has not started (409 once it has)."""
    return job_view(await service.cancel(job_id))


@router.websocket("/ws/jobs/{job_id}")
async def watch_job(websocket: WebSocket, job_id: str) -> None:
    """Stream a job's status changes, starting with its current state, until it is final."""
    services = websocket.app.state.services
    await websocket.accept()
    async with services.hub.watch(job_id=job_id) as watcher:
        try:
            job = await services.submitter.get(job_id)
        except JobNotFoundError as exc:
            await websocket.close(code=4404, reason=str(exc)[:120])
            return
        current = job_view(job)
        await websocket.send_json(current)
        status = current["status"]
        try:
            while not JobStatus(status).terminal:
                event = await watcher.events.get()
                await websocket.send_json(event)
                status = event["status"]
        except WebSocketDisconnect:
            return
    await websocket.close()


@router.websocket("/ws/jobs")
async def watch_jobs(websocket: WebSocket, type: str | None = None) -> None:
    """Stream status changes of every job, or of one job type, until the client leaves."""
    services = websocket.app.state.services
    await websocket.accept()
    async with services.hub.watch(job_type=type) as watcher:
        try:
            while True:
                await websocket.send_json(await watcher.events.get())
        except WebSocketDisconnect:
            return


def unsupported_handler(request: Request, exc: Exception) -> Response:
    """Answer 415 for a body that is not JSON."""
    return problem(415, f"send Content-Type: application/json, not {str(exc) or 'nothing'!r}")

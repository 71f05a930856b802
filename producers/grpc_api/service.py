"""The ``taskq.v1.Jobs`` service: each call checked, submitted and answered through the HTTP API's own parts."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, TypeVar

import grpc
from loguru import logger
from opentelemetry.trace import SpanKind

from jobstore.model import JobSearch, JobStatus
from producers.api.app import Services
from producers.api.metrics import BUCKETS
from producers.auth.authenticator import Authenticator
from producers.auth.principal import Principal, Scope
from producers.grpc_api.calls import Context
from producers.grpc_api.messages import (
    STATUSES,
    event_message,
    job_message,
    request_fields,
    view_message,
)
from producers.grpc_api.status import code_of, details_of, trailers_of
from producers.grpc_api.v1 import jobs_pb2 as pb
from producers.requests import checked_request
from producers.submit import JobRequest, Submitted
from producers.tenancy import job_view
from telemetry import tracing
from telemetry.metrics import MetricSet, counter, histogram
from topology.errors import (
    AccessError,
    DeadlineExceededError,
    JobRejectedError,
    RequestTooLargeError,
    TaskqError,
)
from topology.limits import MAX_SHORT_STRING_BYTES
from topology.settings import ApiSettings

SERVICE = pb.DESCRIPTOR.services_by_name["Jobs"].full_name  # taskq.v1.Jobs
DOOR = "grpc"  # the source of its jobs: its idempotency keys are its own, as each door's are
T = TypeVar("T")
Req = TypeVar("Req")
Reply = TypeVar("Reply")
if TYPE_CHECKING:
    Handler: TypeAlias = Callable[["JobsService", Req, Context, Principal], Awaitable[Reply]]
    Method: TypeAlias = Callable[["JobsService", Req, Context], Awaitable[Reply]]


class GrpcMetrics(MetricSet):
    """Calls of the gRPC job API by method and status code, and how long they took."""

    calls = counter(
        "taskq_grpc_requests_total",
        "gRPC calls of the job API by method and status code.",
        "method code",
    )
    duration = histogram(
        "taskq_grpc_request_duration_seconds",
        "gRPC call duration by method (a Watch: until its stream ended).",
        "method",
        buckets=BUCKETS,
    )


def _unary(scope: Scope) -> Callable[[Handler[Req, Reply]], Method[Req, Reply]]:
    """Make a handler a unary method that answers as its caller: authenticated, timed, traced, taskq errors turned into status codes."""

    def method(handler: Handler[Req, Reply]) -> Method[Req, Reply]:
        name = handler.__name__

        @functools.wraps(handler)
        async def answer(self: JobsService, request: Req, context: Context) -> Reply:
            # The hot path of every unary call: no generator-based context manager, no span
            # when tracing is off (each cost a few microseconds of the call's budget).
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if not tracing.enabled():
                    return await handler(self, request, context, await self._caller(context, scope))
                with self._span(name, context):
                    return await handler(self, request, context, await self._caller(context, scope))
            except BaseException as exc:
                code = code_of(exc)
                await _end(name, context, exc, code)
            finally:
                self._record(name, code, started)

        return answer

    return method


class JobsService:
    """Submits, reads, cancels and watches jobs for callers holding a credential with the scope."""

    def __init__(
        self, services: Services, settings: ApiSettings, metrics: GrpcMetrics | None = None
    ) -> None:
        assert services.authenticator is not None  # Services makes one when none is given
        self._authenticator: Authenticator = services.authenticator
        self._submitter, self._hub, self._settings = services.submitter, services.hub, settings
        metrics = metrics or GrpcMetrics()
        # labels() costs more than the increment; methods and codes are few.
        self._calls = functools.cache(metrics.calls.labels)
        self._durations = functools.cache(metrics.duration.labels)
        # Submissions outlive a caller whose deadline passed: a job is stored and published
        # whole or not at all, never cut off between the two.
        self._submitting: set[asyncio.Future[Any]] = set()

    @_unary(Scope.JOBS_WRITE)
    async def Submit(
        self, request: pb.SubmitRequest, context: Context, caller: Principal
    ) -> pb.SubmitResponse:
        """Store and publish one job; answer once the broker confirmed it."""
        limit = self._settings.max_body_bytes
        if request.ByteSize() > limit:
            raise RequestTooLargeError(f"a job is at most {limit} bytes (TASKQ_MAX_BODY_BYTES)")
        job = _request(request, caller)
        if isinstance(job, TaskqError):
            raise job
        done = await self._outlived(self._submitter.submit(job), context)
        return pb.SubmitResponse(job=_answer(done), replayed=done.replayed)

    @_unary(Scope.JOBS_WRITE)
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context, caller: Principal
    ) -> pb.SubmitBatchResponse:
        """Submit every job with confirms awaited together; one result per job, in order."""
        checked = [_request(job, caller) for job in request.jobs]
        outcomes = await self._outlived(self._submitter.submit_many(checked), context)
        results = [_result(outcome) for outcome in outcomes]
        accepted = sum(1 for r in results if r.HasField("job"))
        return pb.SubmitBatchResponse(
            accepted=accepted, rejected=len(results) - accepted, results=results
        )

    @_unary(Scope.JOBS_READ)
    async def Get(self, request: pb.GetRequest, context: Context, caller: Principal) -> pb.Job:
        """Return the job, if the caller's tenant may see it."""
        return job_message(await self._submitter.get(request.id, caller.viewer))

    @_unary(Scope.JOBS_READ)
    async def List(
        self, request: pb.ListRequest, context: Context, caller: Principal
    ) -> pb.ListResponse:
        """Return one page of the caller's jobs, newest first."""
        limit = request.limit or 50
        if limit > 500:
            raise JobRejectedError("limit is 1-500", field="limit")
        if len(request.type.encode()) > MAX_SHORT_STRING_BYTES or len(request.cursor) > 64:
            raise JobRejectedError("type or cursor is too long", field="type")
        search = JobSearch(
            status=STATUSES.get(request.status),
            type=request.type or None,
            limit=limit,
            cursor=request.cursor or None,
        )
        page = await self._submitter.list_jobs(caller.viewer, search)
        return pb.ListResponse(
            jobs=[job_message(job) for job in page.jobs], next_cursor=page.next_cursor or ""
        )

    @_unary(Scope.JOBS_WRITE)
    async def Cancel(
        self, request: pb.CancelRequest, context: Context, caller: Principal
    ) -> pb.Job:
        """Cancel a job that has not started."""
        return job_message(await self._submitter.cancel(request.id, caller.viewer))

    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.JobEvent]:
        """Stream status changes of one job (its current state first), of a type, or of all the caller's jobs."""
        idle = self._settings.ws_idle_timeout
        async with self._call("Watch", context, Scope.JOBS_READ) as caller:
            target = request.WhichOneof("target")
            job_id = request.job_id if target == "job_id" else None
            job_type = request.type if target == "type" else None
            async with self._hub.watch(caller.viewer, job_id=job_id, job_type=job_type) as w:
                if job_id is not None:
                    current = job_view(await self._submitter.get(job_id, caller.viewer))
                    yield event_message(current)
                    if JobStatus(current["status"]).terminal:
                        return
                while True:
                    try:
                        event = await asyncio.wait_for(w.events.get(), idle)
                    except TimeoutError:
                        # Quiet for TASKQ_WS_IDLE_TIMEOUT, as a quiet WebSocket is closed: the
                        # stream ends with OK and the caller watches again to go on.
                        return
                    yield event_message(event)
                    if job_id is not None and JobStatus(event["status"]).terminal:
                        return

    @asynccontextmanager
    async def _call(self, method: str, context: Context, scope: Scope) -> AsyncIterator[Principal]:
        """Run a streaming call as ``_unary`` runs a unary one."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            with self._span(method, context):
                yield await self._caller(context, scope)
        except BaseException as exc:
            code = code_of(exc)
            await _end(method, context, exc, code)
        finally:
            self._record(method, code, started)

    def _record(self, method: str, code: grpc.StatusCode, started: float) -> None:
        """Count a call that ended with ``code``, and how long it took since ``started``."""
        self._calls(method, code.name).inc()
        self._durations(method).observe(time.perf_counter() - started)

    def _span(self, method: str, context: Context) -> AbstractContextManager[object]:
        """Return the span of one call, continuing the caller's ``traceparent`` metadata."""
        return tracing.span(
            f"{SERVICE}/{method}",
            kind=SpanKind.SERVER,
            parent_headers=dict(context.invocation_metadata() or ()),
            attributes={"rpc.system": "grpc", "rpc.method": method},
        )

    async def _caller(self, context: Context, scope: Scope) -> Principal:
        """Return the caller of the call's ``authorization`` metadata, if it holds ``scope``."""
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        caller = await self._authenticator.authenticate(authorization)
        caller.require(scope)
        return caller

    async def _outlived(self, work: Coroutine[Any, Any, T], context: Context) -> T:
        """Await ``work`` within the call's deadline; past it, ``work`` goes on and the caller is told."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            work.close()
            raise DeadlineExceededError("the deadline passed before the call started")
        loop = asyncio.get_running_loop()
        task = loop.create_task(work)
        self._submitting.add(task)
        task.add_done_callback(self._submitting.discard)
        # One future, woken by the work's end or by the deadline: a cancelled call cancels only
        # it, and the work goes on. Cheaper per call than asyncio.timeout around asyncio.shield.
        woken: asyncio.Future[None] = loop.create_future()
        task.add_done_callback(functools.partial(_wake, woken))
        timer = None if remaining is None else loop.call_later(remaining, _wake, woken)
        try:
            await woken
        finally:
            if timer is not None:
                timer.cancel()
        if not task.done():
            raise DeadlineExceededError(
                "the deadline passed before the broker confirmed; the job may still be "
                "accepted: submit it again with the same idempotency key to learn its outcome"
            )
        return task.result()


def _wake(woken: asyncio.Future[None], work: asyncio.Future[Any] | None = None) -> None:
    """Wake the call awaiting ``woken``: its work ended (``work``), or its deadline passed."""
    if work is not None and not work.cancelled():
        work.exception()  # taken here too: a caller that left never reads it
    if not woken.done():
        woken.set_result(None)


async def _end(
    method: str, context: Context, error: BaseException, code: grpc.StatusCode
) -> NoReturn:
    """End the call with ``code`` (logged when it is the service's fault); a cancellation goes on."""
    if not isinstance(error, Exception):
        raise error
    if code is grpc.StatusCode.INTERNAL:
        logger.opt(exception=error).error("{} failed unexpectedly", method)
    elif code is grpc.StatusCode.UNAVAILABLE and not isinstance(error, AccessError):
        logger.warning("{} -> UNAVAILABLE: {}", method, error)
    await context.abort(code, details_of(error, code), trailers_of(error))


def _request(message: pb.SubmitRequest, caller: Principal) -> JobRequest | TaskqError:
    """Return the job request a message makes for ``caller``, or why it makes none."""
    try:
        fields = request_fields(message)
        caller.require_type(message.type)
    except TaskqError as exc:
        return exc
    return checked_request(fields, caller.tenant, door=DOOR)


def _answer(done: Submitted) -> pb.Job:
    answer = done.answer
    return view_message(done.view()) if isinstance(answer, bytes) else job_message(answer)


def _result(outcome: Submitted | TaskqError) -> pb.SubmitResult:
    if isinstance(outcome, TaskqError):
        code = code_of(outcome)
        field = getattr(outcome, "field", None) or ""
        problem = pb.Problem(code=code.value[0], message=details_of(outcome, code), field=field)
        return pb.SubmitResult(problem=problem)
    return pb.SubmitResult(job=_answer(outcome), replayed=outcome.replayed)

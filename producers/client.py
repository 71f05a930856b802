"""Python clients: submit jobs and read their status through the same ``Submitter`` as the HTTP API.

``SyncClient`` runs an ``AsyncClient`` on a private loop in the caller's thread, publishing
with pika's blocking connection (the natural transport for Django, Flask and scripts).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, Self, TypedDict, TypeVar, Unpack

from pydantic import JsonValue

from jobstore.model import JobSearch, JobStatus
from producers import workflows
from producers.backends import (
    Backends,
    ClosingPublisher,
    Producer,
    confirmed,
    open_producer,
    transport,
)
from producers.pika_publisher import PikaPublisher
from producers.requests import WorkflowSubmission, checked_request
from producers.submit import JobRequest, Submitted
from producers.tenancy import Viewer, job_view, page_view
from producers.workflows import read_workflow, workflow_view
from topology.closing import AsyncClosing
from topology.errors import JobRejectedError, TaskqError
from topology.settings import load_settings
from topology.spec import Priority

T = TypeVar("T")
P = ParamSpec("P")
JobView = dict[str, Any]


class JobOptions(TypedDict, total=False):
    """How to run a job: the optional fields of ``POST /jobs``."""

    priority: Priority | str
    delay: float | None
    run_at: datetime | None
    max_attempts: int | None
    idempotency_key: str | None
    callback_url: str | None
    correlation_id: str | None


class JobFilters(TypedDict, total=False):
    """Which jobs to list: the query parameters of ``GET /jobs``."""

    status: JobStatus | None
    type: str | None
    limit: int  # 1-500, default 50
    cursor: str | None


class AsyncClient(AsyncClosing):
    """Submits jobs from asyncio code with a confirmed publisher; open it with ``connect``."""

    def __init__(self, producer: Producer[ClosingPublisher], viewer: Viewer) -> None:
        self._producer = producer
        self._submitter = producer.submitter
        self._viewer = viewer  # the client's tenant: what it submits as, and what it may see
        self._closed = False

    @classmethod
    async def connect(
        cls,
        environ: Mapping[str, str] | None = None,
        open_publisher: Callable[[Backends], Awaitable[ClosingPublisher]] | None = None,
    ) -> AsyncClient:
        """Connect to the broker and open the stores named by ``TASKQ_*`` (default: ``os.environ``) through ``open_publisher`` (default: aio-pika).

        Raises:
            SettingsError, TopologyFileError: bad configuration.
            BrokerUnavailableError, StoreUnavailableError: a dependency is down.
        """
        settings = load_settings(environ)
        producer = await open_producer(settings, open_publisher or confirmed("taskq client"))
        return cls(producer, Viewer(settings.client.tenant))

    async def close(self) -> None:
        """Close the broker connection and the stores; closing twice does nothing."""
        if not self._closed:
            self._closed = True
            await self._producer.close()

    async def submit(
        self, job_type: str, payload: JsonValue = None, **options: Unpack[JobOptions]
    ) -> JobView:
        """Store and publish one job; return its view (plus ``replayed``) once the broker confirmed it.

        Raises:
            JobRejectedError: the job is invalid (unknown type, bad field, key reused).
            IdempotencyInFlightError: the same key is being submitted right now.
            BrokerError, StoreError, BlobStoreError: a dependency failed.
        """
        request = checked_request(
            {"type": job_type, "payload": payload, **options}, self._viewer.tenant
        )
        if isinstance(request, JobRejectedError):
            raise request
        return _view(await self._submitter.submit(request))

    async def submit_many(self, requests: Sequence[JobRequest]) -> list[JobView | TaskqError]:
        """Submit each request with confirms awaited together; one view or error per request, in order."""
        checked = [checked_request(r, self._viewer.tenant) for r in requests]
        results = await self._submitter.submit_many(checked)
        return [r if isinstance(r, TaskqError) else _view(r) for r in results]

    async def settle(self) -> None:
        """Write the rows of accepted jobs that wait to share a transaction (``close`` does too)."""
        await self._submitter.settle()

    async def status(self, job_id: str) -> JobView:
        """Return the job's view (``JobNotFoundError``: no job has this id)."""
        return job_view(await self._submitter.get(job_id, self._viewer))

    async def list(self, **filters: Unpack[JobFilters]) -> dict[str, Any]:
        """Return one page of jobs newest first, as ``GET /jobs`` does: ``{jobs, next_cursor}``."""
        page = await self._submitter.list_jobs(self._viewer, JobSearch(**filters))
        return page_view(page)

    async def cancel(self, job_id: str) -> JobView:
        """Cancel a job that has not started (``JobStateError`` once it has)."""
        return job_view(await self._submitter.cancel(job_id, self._viewer))

    async def submit_workflow(self, workflow: WorkflowSubmission) -> JobView:
        """Store a ``chain``, ``group`` or ``chord`` (``producers.workflows``) and publish its first steps; return its view.

        Raises:
            JobRejectedError: a step is invalid (unknown type, bad field), or the key was reused.
            BrokerError, StoreError, BlobStoreError: a dependency failed.
        """
        answer = await workflows.submit_workflow(
            self._submitter, workflow, tenant=self._viewer.tenant
        )
        return {**workflow_view(answer), "replayed": answer.replayed}

    async def workflow(self, workflow_id: str) -> JobView:
        """Return a workflow's view: status, counts, error and every step's job (``JobNotFoundError``: unknown id)."""
        store, sealer = self._submitter.store, self._submitter.sealer
        return workflow_view(await read_workflow(store, sealer, workflow_id, self._viewer))

    async def cancel_workflow(self, workflow_id: str) -> JobView:
        """Cancel a running workflow and every step not started (``JobStateError`` once it ended)."""
        submitter = self._submitter
        answer = await workflows.cancel_workflow(
            submitter.store, submitter.sealer, workflow_id, self._viewer, submitter.clock()
        )
        return workflow_view(answer)


def _view(done: Submitted) -> JobView:
    return {**done.view(), "replayed": done.replayed}


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]], *, settle: bool = False
) -> Callable[Concatenate[SyncClient, P], T]:
    """Return ``AsyncClient``'s ``method`` as a ``SyncClient`` method that runs it to completion."""

    def blocking(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        work = method(self._client, *args, **kwargs)
        return self._run(self._settled(work) if settle else work)

    functools.update_wrapper(blocking, method)  # its name, docstring and signature, for help()
    blocking.__qualname__ = f"SyncClient.{method.__name__}"
    return blocking


class SyncClient:
    """Submits jobs from synchronous code, blocking until the broker confirmed each one."""

    # Each method is ``AsyncClient``'s, run on the private loop (see the module docstring);
    # calls from several threads take turns.

    submit = _blocking(AsyncClient.submit, settle=True)
    submit_many = _blocking(AsyncClient.submit_many, settle=True)
    status = _blocking(AsyncClient.status)
    list = _blocking(AsyncClient.list)
    cancel = _blocking(AsyncClient.cancel)
    submit_workflow = _blocking(AsyncClient.submit_workflow)
    workflow = _blocking(AsyncClient.workflow)
    cancel_workflow = _blocking(AsyncClient.cancel_workflow)

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Connect as ``AsyncClient.connect`` does, over pika (``RuntimeError`` in a running event loop)."""
        _refuse_running_loop()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        try:
            self._client = self._loop.run_until_complete(
                AsyncClient.connect(environ, transport(PikaPublisher.connect, "taskq sync client"))
            )
        except BaseException:
            self._shut_loop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the broker connection, the stores and the private loop; closing twice does nothing."""
        with self._lock:
            if self._loop.is_closed():
                return
            try:
                self._loop.run_until_complete(self._client.close())
            finally:
                self._shut_loop()

    async def _settled(self, work: Awaitable[T]) -> T:
        """Await ``work``, then write the rows it held back: the private loop is idle between calls."""
        try:
            return await work
        finally:
            await self._client.settle()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to completion on the private loop, one call at a time."""
        try:
            _refuse_running_loop()
            with self._lock:
                if self._loop.is_closed():
                    raise RuntimeError("this SyncClient is closed")
                return self._loop.run_until_complete(work)
        finally:
            # A refused coroutine was never started; closing it avoids a "never awaited" warning.
            work.close()

    def _shut_loop(self) -> None:
        loop = self._loop
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _refuse_running_loop() -> None:
    """Raise ``RuntimeError`` when this thread runs an event loop, which a blocking call would stall."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "SyncClient blocks its thread, so it cannot be used while an event loop runs in it; "
        "use `await AsyncClient.connect()` in async code"
    )

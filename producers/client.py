"""Python clients: submit jobs and read their status through the same ``Submitter`` as the HTTP API.

``AsyncClient`` is for asyncio code; ``SyncClient`` is for Django, Flask and scripts. Both
return the job view the HTTP API answers with (plus ``replayed``) and raise the same
``TaskqError`` subclasses it maps to status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import orjson
from pydantic import JsonValue, ValidationError

from jobstore.model import JobStatus
from producers.backends import Backends, open_backends
from producers.pika_publisher import PikaPublisher
from producers.publisher import ConfirmedPublisher, Publisher
from producers.requests import JobSubmission
from producers.settings import ClientSettings
from producers.submit import JobRequest, Submitted, Submitter
from producers.tenancy import Viewer, list_visible
from producers.views import job_view
from topology.closing import AsyncClosing
from topology.errors import JobRejectedError, TaskqError
from topology.settings import load_settings
from topology.spec import Priority

T = TypeVar("T")
JobView = dict[str, Any]
# The fields a client may set: the same as POST /jobs (``identity`` is the webhook receiver's;
# the tenant is the client's own, from TASKQ_TENANT).
_REQUEST_FIELDS = tuple(
    f.name for f in dataclasses.fields(JobRequest) if f.name not in ("identity", "source", "tenant")
)


class _ClosingPublisher(Publisher, Protocol):
    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class _Core:
    """What both clients front: the submitter, and what to close with it."""

    submitter: Submitter
    publisher: _ClosingPublisher
    backends: Backends
    viewer: Viewer

    async def submit(self, values: Mapping[str, Any]) -> JobView:
        return _job(await self.submitter.submit(_request(values, self.viewer.tenant)))

    async def submit_many(self, requests: Sequence[JobRequest]) -> list[JobView | TaskqError]:
        checked = [_checked(r, self.viewer.tenant) for r in requests]
        valid = [c for c in checked if isinstance(c, JobRequest)]
        outcomes = iter(await self.submitter.submit_many(valid))
        # Requests the schema refused keep their place, so results line up with requests.
        return [c if isinstance(c, TaskqError) else _outcome(next(outcomes)) for c in checked]

    async def status(self, job_id: str) -> JobView:
        return job_view(await self.submitter.get(job_id, self.viewer))

    async def list_jobs(
        self, status: JobStatus | None, job_type: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        page = await list_visible(
            self.submitter.store,
            self.viewer,
            status=status,
            job_type=job_type,
            limit=limit,
            cursor=cursor,
        )
        return {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}

    async def cancel(self, job_id: str) -> JobView:
        return job_view(await self.submitter.cancel(job_id, self.viewer))

    async def close(self) -> None:
        try:
            await self.publisher.close()
        finally:
            await self.backends.close()


async def _open(
    environ: Mapping[str, str] | None,
    connect: Callable[[Backends], Awaitable[_ClosingPublisher]],
) -> _Core:
    """Build the backends from ``TASKQ_*`` settings and a publisher on them, closing all on failure."""
    backends = await open_backends(environ)
    try:
        publisher = await connect(backends)
    except BaseException:
        await backends.close()
        raise
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.submit
    )
    tenant = load_settings(ClientSettings, environ).tenant
    return _Core(submitter, publisher, backends, Viewer(tenant))


def _request(values: Mapping[str, Any], tenant: str) -> JobRequest:
    """Return the request once it passes the HTTP API's schema, so both doors accept the same jobs.

    Raises:
        JobRejectedError: naming the first invalid field.
    """
    try:
        body = JobSubmission.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise _rejected(exc) from exc
    return JobRequest(**{name: getattr(body, name) for name in _REQUEST_FIELDS}, tenant=tenant)


def _checked(request: JobRequest, tenant: str) -> JobRequest | JobRejectedError:
    try:
        return _request({name: getattr(request, name) for name in _REQUEST_FIELDS}, tenant)
    except JobRejectedError as exc:
        return exc


def _rejected(exc: ValidationError) -> JobRejectedError:
    errors = exc.errors()
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in errors)
    field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
    return JobRejectedError(f"invalid job: {detail}", field=field)


def _job(done: Submitted) -> JobView:
    view: JobView = orjson.loads(done.response)
    view["replayed"] = done.replayed
    return view


def _outcome(outcome: Submitted | TaskqError) -> JobView | TaskqError:
    return outcome if isinstance(outcome, TaskqError) else _job(outcome)


class AsyncClient(AsyncClosing):
    """Submits jobs from asyncio code with a confirmed publisher; open it with ``connect``."""

    def __init__(self, core: _Core) -> None:
        self._core = core
        self._closed = False

    @classmethod
    async def connect(cls, environ: Mapping[str, str] | None = None) -> AsyncClient:
        """Connect to the broker and open the stores named by ``TASKQ_*`` (default: ``os.environ``).

        Raises:
            SettingsError, TopologyFileError: bad configuration.
            BrokerUnavailableError, StoreUnavailableError: a dependency is down.
        """

        async def confirmed(backends: Backends) -> ConfirmedPublisher:
            return await ConfirmedPublisher.connect(
                backends.broker, backends.topology, backends.publisher, name="taskq client"
            )

        return cls(await _open(environ, confirmed))

    async def close(self) -> None:
        """Close the broker connection and the stores; closing twice does nothing."""
        if not self._closed:
            self._closed = True
            await self._core.close()

    async def submit(
        self,
        job_type: str,
        payload: JsonValue = None,
        *,
        priority: Priority | str = Priority.MEDIUM,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        correlation_id: str | None = None,
    ) -> JobView:
        """Store and publish one job; return its view (plus ``replayed``) once the broker confirmed it.

        Raises:
            JobRejectedError: the job is invalid (unknown type, bad field, key reused).
            IdempotencyInFlightError: the same key is being submitted right now.
            BrokerError, StoreError, BlobStoreError: a dependency failed; nothing is kept.
        """
        return await self._core.submit(
            {
                "type": job_type,
                "payload": payload,
                "priority": priority,
                "delay": delay,
                "run_at": run_at,
                "max_attempts": max_attempts,
                "idempotency_key": idempotency_key,
                "callback_url": callback_url,
                "correlation_id": correlation_id,
            }
        )

    async def submit_many(self, requests: Sequence[JobRequest]) -> list[JobView | TaskqError]:
        """Submit each request with confirms awaited together; one view or error per request, in order."""
        return await self._core.submit_many(requests)

    async def status(self, job_id: str) -> JobView:
        """Return the job's view.

        Raises:
            JobNotFoundError: no job has this id.
        """
        return await self._core.status(job_id)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Return one page of jobs newest first, as ``GET /jobs`` does: ``{jobs, next_cursor}``."""
        return await self._core.list_jobs(status, type, limit, cursor)

    async def cancel(self, job_id: str) -> JobView:
        """Cancel a job that has not started.

        Raises:
            JobNotFoundError: no job has this id.
            JobStateError: the job already started or finished.
        """
        return await self._core.cancel(job_id)


class SyncClient:
    """Submits jobs from synchronous code, blocking until the broker confirmed each one.

    It runs the submitter on a private event loop in the calling thread, publishing through
    pika's blocking connection; calls from several threads take turns. It cannot be used
    inside a running event loop: use ``AsyncClient`` there.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Connect to the broker and open the stores named by ``TASKQ_*`` (default: ``os.environ``).

        Raises:
            RuntimeError: called while an event loop runs in this thread.
            SettingsError, TopologyFileError: bad configuration.
            BrokerUnavailableError, StoreUnavailableError: a dependency is down.
        """
        _refuse_running_loop()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        try:
            self._core = self._loop.run_until_complete(_open(environ, _blocking))
        except BaseException:
            self._shut_loop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the broker connection, the stores and the private loop; closing twice does nothing."""
        with self._lock:
            if self._loop.is_closed():
                return
            try:
                self._loop.run_until_complete(self._core.close())
            finally:
                self._shut_loop()

    def submit(
        self,
        job_type: str,
        payload: JsonValue = None,
        *,
        priority: Priority | str = Priority.MEDIUM,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        correlation_id: str | None = None,
    ) -> JobView:
        """Store and publish one job; return its view (plus ``replayed``) once the broker confirmed it.

        Raises:
            JobRejectedError: the job is invalid (unknown type, bad field, key reused).
            IdempotencyInFlightError: the same key is being submitted right now.
            BrokerError, StoreError, BlobStoreError: a dependency failed; nothing is kept.
        """
        return self._run(
            self._core.submit(
                {
                    "type": job_type,
                    "payload": payload,
                    "priority": priority,
                    "delay": delay,
                    "run_at": run_at,
                    "max_attempts": max_attempts,
                    "idempotency_key": idempotency_key,
                    "callback_url": callback_url,
                    "correlation_id": correlation_id,
                }
            )
        )

    def submit_many(self, requests: Sequence[JobRequest]) -> list[JobView | TaskqError]:
        """Submit each request in turn; one view or error per request, in order."""
        return self._run(self._core.submit_many(requests))

    def status(self, job_id: str) -> JobView:
        """Return the job's view.

        Raises:
            JobNotFoundError: no job has this id.
        """
        return self._run(self._core.status(job_id))

    def list(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Return one page of jobs newest first, as ``GET /jobs`` does: ``{jobs, next_cursor}``."""
        return self._run(self._core.list_jobs(status, type, limit, cursor))

    def cancel(self, job_id: str) -> JobView:
        """Cancel a job that has not started.

        Raises:
            JobNotFoundError: no job has this id.
            JobStateError: the job already started or finished.
        """
        return self._run(self._core.cancel(job_id))

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


async def _blocking(backends: Backends) -> PikaPublisher:
    return await PikaPublisher.connect(
        backends.broker, backends.topology, backends.publisher, name="taskq sync client"
    )


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

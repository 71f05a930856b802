"""Job submission: the one set of rules behind ``POST /jobs`` and the Python clients."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from loguru import logger
from pydantic import JsonValue

from jobstore.blobs import BlobStore, blob_key
from jobstore.model import ClaimState, JobRecord, JobStatus, JobStore
from producers.events import event_body, event_key
from producers.publisher import Publisher
from producers.settings import SubmitSettings
from producers.submit_metrics import SUBMISSIONS, UNKNOWN_GROUP, outcome_of
from producers.tenancy import Viewer, get_visible
from producers.views import job_view
from topology.envelope import Envelope, PayloadRef, new_job_id
from topology.errors import (
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    JobRejectedError,
    JobStateError,
    ReservedJobTypeError,
    TaskqError,
    UnknownJobTypeError,
)
from topology.model import CompiledTopology
from topology.names import CALLBACK_JOB_TYPE, DEFAULT_TENANT
from topology.reserved import TASKQ, reservations, reserving
from topology.routes import Route, delay_route, job_route
from topology.spec import Priority

Clock = Callable[[], datetime]
CANCELLABLE = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request to run one job."""

    type: str
    payload: JsonValue = None
    priority: Priority = Priority.MEDIUM
    delay: float | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    correlation_id: str | None = None
    # What makes a replay the same request, when not every field: a webhook's raw body, since
    # a sender's retry of one delivery carries a new timestamp and signature.
    identity: str | None = None
    source: str = "client"  # who submitted it: api, client, callback, webhook:<name>
    tenant: str = DEFAULT_TENANT  # whose job it is; set by the door from the caller's credential

    def claim_key(self) -> str | None:
        """Return the idempotency key as the store holds it: scoped by tenant and source.

        Tenants and sources never contain ``/``, so a key one caller chooses can never equal
        a key of another tenant or of taskq's own doors (webhook deliveries, callbacks).
        """
        key = self.idempotency_key
        return None if not key else f"{self.tenant}/{self.source}/{key}"

    def fingerprint(self) -> str:
        """Return a hash of what the request asks for, to tell a replay from a different request."""
        if self.identity is not None:
            return hashlib.sha256(self.identity.encode()).hexdigest()
        fields = {
            k: getattr(self, k)
            for k in self.__slots__
            if k not in ("idempotency_key", "identity", "source")
        }
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job the broker confirmed, or the stored answer to an earlier identical request."""

    job_id: str
    response: bytes
    replayed: bool = False


@dataclass(slots=True)
class _Pending:
    request: JobRequest
    job: JobRecord
    envelope: Envelope
    route: Route


class Submitter:
    """Validates, stores and publishes jobs; 2xx-worthy only once the broker confirmed."""

    def __init__(
        self,
        topology: CompiledTopology,
        publisher: Publisher,
        store: JobStore,
        blobs: BlobStore,
        settings: SubmitSettings | None = None,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.topology = topology
        self._publisher = publisher
        self._store = store
        self._blobs = blobs
        self._settings = settings or SubmitSettings()
        self._clock = clock
        self._groups: dict[str, str | None] = {}
        self._reserved = reservations(topology.webhooks)
        # Set by the app assembly above this package: the reason a callback URL is refused.
        self.callback_check: Callable[[str], Awaitable[str | None]] | None = None

    @property
    def store(self) -> JobStore:
        """Return the job store this submitter records jobs in."""
        return self._store

    async def submit(self, request: JobRequest) -> Submitted:
        """Store and publish one job; return once the broker confirmed it.

        Raises:
            ReservedJobTypeError: only taskq or a webhook source may submit this type.
            JobRejectedError: the request is invalid (unknown type, bad delay, key reused).
            IdempotencyInFlightError: the same key is being submitted right now.
            BrokerUnavailableError, PublishError: the broker did not confirm; nothing is kept.
            StoreUnavailableError, BlobUnavailableError: a store is down; nothing is published.
        """
        return await self._counted(request, None)

    async def submit_reserved(self, request: JobRequest, *, producer: str) -> Submitted:
        """Submit a job of a type reserved for ``producer``: taskq itself or a webhook source.

        Only taskq's own code calls this (the webhook receiver once a delivery is verified,
        and the enqueueing of callbacks); no route or client leads here.

        Raises:
            ReservedJobTypeError: the type is not reserved for ``producer``.
            The rest as ``submit``.
        """
        return await self._counted(request, producer)

    async def _counted(self, request: JobRequest, producer: str | None) -> Submitted:
        try:
            done = await self._submit(request, producer)
        except TaskqError as exc:
            self._count(request, exc)
            raise
        self._count(request, None, replayed=done.replayed)
        return done

    async def _submit(self, request: JobRequest, producer: str | None) -> Submitted:
        outcome = await self._prepare(request, producer)
        if isinstance(outcome, Submitted):
            return outcome
        try:
            await self._publisher.publish(outcome.envelope, outcome.route)
        except TaskqError:
            await self._abandon(outcome)
            raise
        return await self._finish(outcome)

    def _count(
        self, request: JobRequest, error: TaskqError | None, *, replayed: bool = False
    ) -> None:
        group = self.group_of(request.type) or UNKNOWN_GROUP
        outcome = outcome_of(error, replayed=replayed)
        SUBMISSIONS.labels(request.source, group, request.priority.value, outcome).inc()

    async def submit_many(self, requests: Sequence[JobRequest]) -> list[Submitted | TaskqError]:
        """Submit each request; confirms are awaited together; one result per request, in order."""
        if len(requests) > self._settings.batch_max:
            raise JobRejectedError(
                f"a batch holds at most {self._settings.batch_max} jobs, got {len(requests)}",
                field="jobs",
            )
        prepared = await asyncio.gather(
            *(self._prepare(r, None) for r in requests), return_exceptions=True
        )
        pending = [p for p in prepared if isinstance(p, _Pending)]
        published = await self._publisher.publish_many(
            [p.envelope for p in pending], [p.route for p in pending]
        )
        failures = dict(zip((id(p) for p in pending), published, strict=True))
        results: list[Submitted | TaskqError] = []
        for item in prepared:
            if isinstance(item, _Pending):
                error = failures[id(item)]
                if error is None:
                    results.append(await self._finish(item))
                else:
                    await self._abandon(item)
                    results.append(error)
            elif isinstance(item, Submitted | TaskqError):
                results.append(item)
            else:
                raise item
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, TaskqError):
                self._count(request, result)
            else:
                self._count(request, None, replayed=result.replayed)
        return results

    async def get(self, job_id: str, viewer: Viewer) -> JobRecord:
        """Return the job, if ``viewer`` may see it.

        Raises:
            JobNotFoundError: no job has this id that the viewer may see (another tenant's job
                answers exactly as an unknown id does).
        """
        return await get_visible(self._store, viewer, job_id)

    async def cancel(self, job_id: str, viewer: Viewer) -> JobRecord:
        """Cancel a job that has not started; a worker that receives it acks it unrun.

        Raises:
            JobNotFoundError: no job has this id that the viewer may see.
            JobStateError: the job already started or finished.
        """
        await self.get(job_id, viewer)  # the tenant never changes, so this check holds
        now = self._clock()
        job = await self._store.transition(
            job_id, JobStatus.CANCELLED, allowed_from=CANCELLABLE, updated_at=now, finished_at=now
        )
        if job is None:
            current = await self.get(job_id, viewer)
            raise JobStateError(
                f"job {job_id} is {current.status.value}; only scheduled or queued jobs can be cancelled"
            )
        await self._announce(job)
        try:
            await self.follow_up(job)
        except TaskqError as exc:  # the cancel stands; only its callback is missing
            logger.error("callback for cancelled job {} not enqueued: {}", job.id, exc)
        return job

    async def follow_up(self, job: JobRecord) -> None:
        """Enqueue the callback of a job that ended with a ``callback_url`` (at most once per end).

        Raises:
            BrokerUnavailableError, PublishError, StoreUnavailableError: not enqueued; call again.
        """
        request = callback_request(job)
        if request is not None:
            await self.submit_reserved(request, producer=TASKQ)

    async def _prepare(self, request: JobRequest, producer: str | None) -> _Pending | Submitted:
        self._check_type(request.type, producer)
        if request.callback_url is not None and self.callback_check is not None:
            refused = await self.callback_check(request.callback_url)
            if refused is not None:
                raise JobRejectedError(f"callback_url is refused: {refused}", field="callback_url")
        now = self._clock()
        not_before = self._not_before(request, now)
        job_id = new_job_id()
        payload, ref = await self._offload(job_id, request.payload)
        status = JobStatus.SCHEDULED if not_before is not None else JobStatus.QUEUED
        job = JobRecord(
            id=job_id,
            type=request.type,
            status=status,
            priority=request.priority,
            created_at=now,
            updated_at=now,
            payload=payload,
            payload_ref=ref.model_dump() if ref else None,
            max_attempts=request.max_attempts,
            idempotency_key=request.idempotency_key,
            correlation_id=request.correlation_id,
            callback_url=request.callback_url or self._group_callback(request.type),
            not_before=not_before,
            tenant=request.tenant,
        )
        key = request.idempotency_key
        scoped = request.claim_key()
        claim = await self._store.create_job(
            job,
            claim=(scoped, request.fingerprint()) if scoped else None,
            lease_s=self._settings.idempotency_lease,
        )
        if claim.state is not ClaimState.NEW:
            if ref is not None:
                await self._blobs.delete(ref)
            return _answer_claim(claim.state, claim.job_id, claim.response)
        # Every field was validated on the way in (request schema, type check, delay check),
        # so skip validating them twice on the hot path.
        envelope = Envelope.model_construct(
            id=job_id,
            type=request.type,
            payload=payload,
            payload_ref=ref,
            priority=Priority(request.priority),
            max_attempts=request.max_attempts,
            idempotency_key=key or job_id,
            created_at=now,
            not_before=not_before,
            correlation_id=request.correlation_id,
            tenant=request.tenant,
        )
        route = (
            job_route(self.topology, envelope)
            if not_before is None
            else delay_route(self.topology, envelope, _ms(not_before - now))
        )
        return _Pending(request, job, envelope, route)

    def group_of(self, job_type: str) -> str | None:
        """Return the name of the group that takes ``job_type``, or ``None``."""
        if job_type in self._groups:
            return self._groups[job_type]
        group = self.topology.group_for(job_type)
        name = None if group is None else group.name
        if len(self._groups) < 10_000:  # bounded: clients choose the types they send
            self._groups[job_type] = name
        return name

    def _group_callback(self, job_type: str) -> str | None:
        """Return the callback URL the job type's group sets for its jobs, if any."""
        group = self.topology.group_for(job_type)
        return None if group is None else group.spec.callback_url

    def _check_type(self, job_type: str, producer: str | None) -> None:
        owners = reserving(self._reserved, job_type)
        if owners and all(r.producer != producer for r in owners):
            raise ReservedJobTypeError(
                f"job type {job_type!r} is reserved: {owners[0].why}; submit a type of your own",
                field="type",
            )
        if self.group_of(job_type) is None:
            accepted = ", ".join(self.topology.job_patterns())
            raise UnknownJobTypeError(
                f"unknown job type {job_type!r}; accepted types and patterns: {accepted}",
                field="type",
            )

    def _not_before(self, request: JobRequest, now: datetime) -> datetime | None:
        if request.delay is not None and request.run_at is not None:
            raise JobRejectedError("give either delay or run_at, not both", field="delay")
        when = request.run_at if request.run_at is not None else None
        if request.delay is not None:
            when = now + timedelta(seconds=request.delay)
        if when is None or when <= now:
            return None
        when = when.astimezone(UTC)
        if (when - now).total_seconds() > self._settings.max_delay:
            field = "run_at" if request.run_at is not None else "delay"
            raise JobRejectedError(
                f"{field} is more than {self._settings.max_delay:.0f} s ahead; the limit is "
                "TASKQ_MAX_DELAY",
                field=field,
            )
        return when

    async def _offload(
        self, job_id: str, payload: JsonValue
    ) -> tuple[JsonValue, PayloadRef | None]:
        """Store a large payload in the blob store (claim check) before anything is published."""
        if payload is None:
            return None, None
        data = orjson.dumps(payload)
        if b"\\u0000" in data:
            # PostgreSQL's jsonb cannot hold NUL characters; refuse them for every store alike.
            raise JobRejectedError("payload strings may not contain NUL (\\u0000)", field="payload")
        limit = self._settings.claim_check_bytes
        if limit == 0 or len(data) <= limit:
            return payload, None
        return None, await self._blobs.put(blob_key(job_id), data, "application/json")

    async def _finish(self, pending: _Pending) -> Submitted:
        response = orjson.dumps(job_view(pending.job))
        key = pending.request.claim_key()
        if key:
            await self._store.complete_claim(
                key, pending.job.id, response, ttl_s=self._settings.idempotency_ttl
            )
        if self._settings.submit_events:
            # Off by default: an event per accepted job costs about a third of the ingest
            # rate (bench/http_ingest.py), and watchers start from the stored state anyway.
            await self._announce(pending.job)
        return Submitted(pending.job.id, response)

    async def _abandon(self, pending: _Pending) -> None:
        await self._store.abandon_job(pending.job.id, pending.request.claim_key())
        if pending.envelope.payload_ref is not None:
            await self._blobs.delete(pending.envelope.payload_ref)

    async def _announce(self, job: JobRecord) -> None:
        # Events are advisory (the store is the truth), so a lost one is logged, not fatal.
        try:
            await self._publisher.publish_events([(event_key(job), event_body(job))])
        except TaskqError as exc:
            logger.warning("status event for job {} not published: {}", job.id, exc)


ANNOUNCED = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED})
"""The final statuses a job's callback reports."""


def callback_request(job: JobRecord) -> JobRequest | None:
    """Return the callback job announcing that ``job`` ended, or ``None`` when none is due.

    The callback job (type ``taskq.callback``) carries the URL and the finished job's view; the
    built-in callbacks group delivers it (``webhooks.callbacks``) with the retries, DLQ and
    replay of any job. Its idempotency key names the job and its final status, so announcing
    the same end twice (a redelivery, a retried ack) enqueues one callback. The key lives in
    the ``callback`` source's space, which no caller's key can reach.
    """
    if job.callback_url is None or job.status not in ANNOUNCED or job.type == CALLBACK_JOB_TYPE:
        return None
    return JobRequest(
        type=CALLBACK_JOB_TYPE,
        payload={"url": job.callback_url, "event": f"job.{job.status.value}", "job": job_view(job)},
        priority=job.priority,
        idempotency_key=f"callback:{job.id}:{job.status.value}",
        correlation_id=job.correlation_id or job.id,
        source="callback",
        tenant=job.tenant,
    )


def _answer_claim(state: ClaimState, job_id: str, response: bytes | None) -> Submitted:
    if state is ClaimState.DONE and response is not None:
        return Submitted(job_id, response, replayed=True)
    if state is ClaimState.MISMATCH:
        raise IdempotencyMismatchError(
            "this Idempotency-Key was already used with a different request; use a new key",
            field="idempotency_key",
        )
    raise IdempotencyInFlightError(
        f"a request with this Idempotency-Key (job {job_id}) is still in progress; retry later"
    )


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))

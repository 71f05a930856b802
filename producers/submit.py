"""Job submission: the one set of rules behind ``POST /jobs``, the webhooks and the Python clients."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from loguru import logger
from pydantic import JsonValue

from jobstore.blobs import BlobStore, blob_key
from jobstore.coalesce import Coalescer
from jobstore.model import (
    Claim,
    ClaimState,
    Confirmed,
    JobPage,
    JobRecord,
    JobSearch,
    JobStatus,
    JobStore,
    NewJob,
)
from jobstore.sealed_jobs import opened
from producers.events import event_body, event_key
from producers.metrics import UNKNOWN_GROUP, ProducerMetrics, outcome_of
from producers.publisher import Publisher
from producers.tenancy import Viewer, get_visible, job_view, list_visible
from telemetry import tracing
from topology import limits
from topology.compiled import CompiledGroup, CompiledTopology
from topology.envelope import Envelope, PayloadRef, new_job_id
from topology.errors import (
    BrokerUnavailableError,
    ContractError,
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    JobRejectedError,
    JobStateError,
    PublishNackedError,
    ReservedJobTypeError,
    TaskqError,
    UnknownJobTypeError,
    UnroutableError,
)
from topology.names import CALLBACK_JOB_TYPE, DEFAULT_TENANT
from topology.reserved import TASKQ, Reservation, reservations, reserving
from topology.routes import Route, delay_route, job_route
from topology.sealing import SEALED, SEALED_CONTENT_TYPE, Sealer, token_of
from topology.settings import SubmitSettings
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
    # The job's id when the door derives it from what it read (a stream entry), so that a
    # second submission of the same input is the same job; no client door sets it.
    job_id: str | None = None

    def claim_key(self) -> str | None:
        """Return the idempotency key as the store holds it: scoped by tenant and source."""
        # Tenants and sources never contain ``/``: no caller's key can equal another tenant's
        # or one of taskq's own doors (webhook deliveries, callbacks).
        key = self.idempotency_key
        return None if not key else f"{self.tenant}/{self.source}/{key}"

    def fingerprint(self) -> str:
        """Return a hash of what the request asks for, to tell a replay from a different request."""
        if self.identity is not None:
            return hashlib.sha256(self.identity.encode()).hexdigest()
        fields = {
            k: getattr(self, k)
            for k in self.__slots__
            if k not in ("idempotency_key", "identity", "source", "job_id")
        }
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    """A job the broker confirmed, or the stored answer to an earlier identical request."""

    job_id: str
    answer: bytes | JobRecord  # the stored answer (a replay), or the job it is made from
    replayed: bool = False

    @property
    def response(self) -> bytes:
        """Return the job's view as JSON: what a 2xx answers with."""
        answer = self.answer
        return answer if isinstance(answer, bytes) else orjson.dumps(job_view(answer))

    def view(self) -> dict[str, Any]:
        """Return the job's view, made straight from the job when there is no stored answer."""
        answer = self.answer
        return orjson.loads(answer) if isinstance(answer, bytes) else job_view(answer)


@dataclass(slots=True)
class _Pending:
    """A checked request turned into its job record, its message and its route."""

    request: JobRequest
    job: JobRecord
    envelope: Envelope
    route: Route


_Outcome = Submitted | TaskqError | None
"""What storing and publishing one job came to: a replay, why not, or ``None`` once confirmed."""


class _Type(NamedTuple):
    """What the topology says of one job type: its group, what is wrong with it, who owns it."""

    group: CompiledGroup | None
    problem: str | None  # why it cannot be a routing key, if it cannot
    owners: tuple[Reservation, ...]  # the producers it is reserved for, if any


# Confirms of jobs without a key held for the next insert at most (a crash loses them: their
# jobs are published once more by the repair sweep, which a worker runs once all the same).
_HOLD_CONFIRMS = 1000

# How long the row of a confirmed job waits for others to share its transaction: a worker that
# receives the job first writes the row itself, and a crash meanwhile loses only the row, which
# the job's worker writes when it runs it.
_ROWS_LINGER = 0.01

# Publish failures that prove the message is not on the broker: the stored job is deleted.
# Any other (no confirm in time, a crash) leaves it to the repair sweep, which publishes it
# again once its deadline passed.
_NOT_PUBLISHED = (UnroutableError, PublishNackedError, ContractError, BrokerUnavailableError)


class Submitter:
    """Validates, stores and publishes jobs; 2xx-worthy only once the broker confirmed."""

    # A job is stored first (its key claimed, a deadline set for its confirm, which ``repair``
    # enforces) unless its message carries all its row holds: then it is published first and
    # its row written behind its confirm (docs/architecture.md, "Submission").

    def __init__(
        self,
        topology: CompiledTopology,
        publisher: Publisher,
        store: JobStore,
        blobs: BlobStore,
        settings: SubmitSettings | None = None,
        *,
        clock: Clock = utc_now,
        metrics: ProducerMetrics | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.topology = topology
        self.sealer = sealer or Sealer()  # opens sealed payloads for readers; no keys: clear
        self._metrics = metrics or ProducerMetrics()
        self._publisher = publisher
        self.store = store
        self._blobs = blobs
        self.settings = settings or SubmitSettings()  # its batch and repair limits, read by callers
        self.clock = clock  # the time now, as this submitter stamps jobs
        self._types: dict[str, _Type] = {}
        self._reserved = reservations(topology.webhooks, topology.streams)
        # labels() costs more than the increment; the label sets are few.
        self._counters = functools.cache(self._metrics.submissions.labels)
        # Concurrent submissions share one insert transaction and one write of their messages;
        # the confirms of jobs without a key wait to ride along with the next insert.
        self._sends: Coalescer[_Pending, _Outcome] = Coalescer(self._send_all, at_once=2)
        self._confirms: Coalescer[Confirmed, None] = Coalescer(self._confirm_jobs)
        # Rows of confirmed jobs whose messages are their record, written in batches behind
        # their confirms; reads through this submitter write them first (``settle``).
        self._rows: Coalescer[NewJob, None] = Coalescer(self._write_rows, linger=_ROWS_LINGER)
        self._unrecorded: list[Confirmed] = []
        # Set by the app assembly above this package: the reason a callback URL is refused.
        self.callback_check: Callable[[str], Awaitable[str | None]] | None = None

    async def forget_blobs(self, jobs: Sequence[JobRecord]) -> None:
        """Delete the claim-checked payloads of prepared jobs that were not stored after all."""
        for job in jobs:
            if job.payload_ref is not None:
                await self._blobs.delete(PayloadRef.model_validate(job.payload_ref).uri)

    async def settle(self) -> None:
        """Write the rows held behind their confirms, so that a read sees every job accepted here."""
        await self._rows.drain()

    async def close(self) -> None:
        """Write the rows and record the confirms still held (the repair sweep covers any lost)."""
        await self._sends.drain()
        await self._rows.drain()
        if self._unrecorded:
            self._confirms.post(self._unrecorded.pop())  # its write takes all those held
        await self._confirms.drain()

    async def submit(self, request: JobRequest) -> Submitted:
        """Store and publish one job; return once the broker confirmed it.

        Raises:
            ReservedJobTypeError: only taskq or a webhook source may submit this type.
            JobRejectedError: the request is invalid (unknown type, bad delay, key reused).
            IdempotencyInFlightError: the same key is being submitted right now.
            BrokerUnavailableError, PublishError: the broker did not confirm it.
            StoreUnavailableError, BlobUnavailableError: a store is down; nothing is published.
        """
        return await self._counted(request, None)

    async def submit_reserved(self, request: JobRequest, *, producer: str) -> Submitted:
        """Submit a job of a type reserved for ``producer`` (taskq or a webhook source); errors as ``submit``."""
        # Only taskq's own code calls this (the webhook receiver once a delivery is verified,
        # and the enqueueing of callbacks); no route or client leads here.
        return await self._counted(request, producer)

    async def _counted(self, request: JobRequest, producer: str | None) -> Submitted:
        try:
            pending = await self._prepare(request, self.clock(), producer)
            done = await self._sends.submit(pending)
            if done is None:
                [done] = await self._confirm_all([pending])
            elif isinstance(done, TaskqError):
                raise done
        except TaskqError as exc:
            self._count(request, exc)
            raise
        self._count(request, done)
        return done

    async def submit_many(
        self,
        requests: Sequence[JobRequest | Submitted | TaskqError],
        *,
        producer: str | None = None,
    ) -> list[Submitted | TaskqError]:
        """Submit each request: one store transaction, one window of confirms; results in order."""
        # ``producer``: the stream source reserved types are for, as in ``submit_reserved``. An
        # outcome in a request's place (a door's refusal, a replay it found) is kept as its result.
        if len(requests) > self.settings.batch_max:
            raise JobRejectedError(
                f"a batch holds at most {self.settings.batch_max} jobs, got {len(requests)}",
                field="jobs",
            )
        now = self.clock()
        prepared: list[_Pending | Submitted | TaskqError] = []
        for request in requests:
            try:
                if isinstance(request, JobRequest):
                    prepared.append(await self._prepare(request, now, producer))
                else:
                    prepared.append(request)
            except TaskqError as exc:
                prepared.append(exc)
        pendings = [p for p in prepared if isinstance(p, _Pending)]
        try:
            outcomes = await self._send_all(pendings)
        except TaskqError as exc:  # nothing was stored, so nothing is published: each says so
            outcomes = [exc] * len(pendings)
        confirmed = [p for p, outcome in zip(pendings, outcomes, strict=True) if outcome is None]
        try:
            answers = iter(await self._confirm_all(confirmed))
        except TaskqError as exc:
            # The jobs are on the broker: each gets its answer, and the repair sweep records
            # the confirms this write lost (publishing them once more, which workers absorb).
            logger.warning("confirms of a batch of {} not recorded: {}", len(confirmed), exc)
            answers = iter([Submitted(p.job.id, p.job) for p in confirmed])
        settled = iter([next(answers) if o is None else o for o in outcomes])
        results = [next(settled) if isinstance(p, _Pending) else p for p in prepared]
        for request, result in zip(requests, results, strict=True):
            if isinstance(request, JobRequest):  # a door's outcome was not a submission
                self._count(request, result)
        return results

    async def _send_all(self, pendings: Sequence[_Pending]) -> list[_Outcome]:
        """Store the jobs stored first in one transaction, publish the new ones; one outcome each."""
        # A job published first has its row written behind its confirm (``_rows``): its message
        # alone makes the job (a worker that receives it first creates its row). A publish the
        # broker did not confirm answers its error (its row deleted when surely not on the
        # broker); a key claimed already, the replay of its answer or why not.
        early = [p for p in pendings if _published_first(p)]
        stored = [p for p in pendings if not _published_first(p)]
        outcomes: dict[int, _Outcome] = {}  # by id() of the pending job
        if not early:
            claims = await self._claimed(stored)
        else:
            # The rest waits one turn of the loop, in which the connection's writer puts the
            # frames this publish queues on the socket: the confirm travels meanwhile (an
            # inline SQLite write runs to its commit without yielding).
            storing = (
                asyncio.ensure_future(self._claimed(stored, meanwhile=True)) if stored else None
            )
            self._rows.write_behind()  # the rows of earlier jobs, while this confirm travels
            errors = await self._publish(early)
            claims = await storing if storing else []
            for pending, error in zip(early, errors, strict=True):
                outcomes[id(pending)] = error
                if error is None:
                    self._rows.post(self._new_job(pending))
                elif isinstance(error, _NOT_PUBLISHED):
                    await self.forget_blobs([pending.job])
        new = []
        if isinstance(claims, TaskqError):
            outcomes.update((id(p), claims) for p in stored)
        else:
            for pending, claim in zip(stored, claims, strict=True):
                if claim.state is ClaimState.NEW:
                    new.append(pending)
                else:
                    outcomes[id(pending)] = await self._refused(pending, claim)
        for pending, error in zip(new, await self._publish(new), strict=True):
            if isinstance(error, _NOT_PUBLISHED):
                await self.store.abandon_job(pending.job.id, pending.request.claim_key())
                await self.forget_blobs([pending.job])
            outcomes[id(pending)] = error
        return [outcomes[id(p)] for p in pendings]

    async def _claimed(
        self, stored: Sequence[_Pending], *, meanwhile: bool = False
    ) -> list[Claim] | TaskqError:
        """Insert the jobs that are stored before they are published; the store's error if it failed."""
        if not stored:
            return []
        if meanwhile:
            await asyncio.sleep(0)  # the turn of the loop that writes the early publish's frames
        try:
            return await self._create_jobs([self._new_job(p) for p in stored])
        except TaskqError as exc:
            return exc

    async def _publish(self, new: Sequence[_Pending]) -> Sequence[TaskqError | None]:
        """Publish the jobs; a publish that fails as a whole fails each of them."""
        if not new:
            return ()
        try:
            return await self._publisher.publish_many(
                [p.envelope for p in new], [p.route for p in new]
            )
        except TaskqError as exc:  # e.g. the broker is down: none of them went out
            return [exc] * len(new)

    async def _refused(self, pending: _Pending, outcome: Claim) -> Submitted | TaskqError:
        """Answer a job whose key was claimed already: its answer replayed, or why not."""
        try:
            await self.forget_blobs([pending.job])
        except TaskqError as exc:  # this job's answer alone, not its batch's
            return exc
        if outcome.state is ClaimState.DONE and outcome.response is not None:
            return Submitted(outcome.job_id, outcome.response, replayed=True)
        if outcome.state is ClaimState.MISMATCH:
            return IdempotencyMismatchError(
                "this Idempotency-Key was already used with a different request; use a new key",
                field="idempotency_key",
            )
        return IdempotencyInFlightError(
            f"a request with this Idempotency-Key (job {outcome.job_id}) is still in progress; "
            "retry later"
        )

    async def repair(self, *, limit: int = 500) -> int:
        """Publish again the jobs stored but never confirmed in time; return how many were taken."""
        # Their submitters stopped (or lost the broker) before the confirm. A job the broker
        # refuses for good is marked failed; one whose publish fails for now waits a sweep.
        if self._unrecorded:  # this process's own confirms, not yet written: not overdue
            await self._confirms.submit(self._unrecorded.pop())
        jobs = await self.store.take_unconfirmed(limit=limit, lease_s=self.settings.repair_after)
        if not jobs:
            return 0
        now = self.clock()
        errors = await self.publish_stored(jobs)
        for job, error in zip(jobs, errors, strict=True):
            if isinstance(error, UnroutableError | PublishNackedError | ContractError):
                await self.store.fail_unpublished(job.id, f"never published: {error}", now)
            elif error is not None:
                logger.warning("job {} not published again yet: {}", job.id, error)
        published = sum(error is None for error in errors)
        logger.info(
            "published again {} of {} jobs stored but never confirmed", published, len(jobs)
        )
        return len(jobs)

    async def publish_stored(self, jobs: Sequence[JobRecord]) -> list[TaskqError | None]:
        """Publish jobs as their rows hold them and record the confirms; the error of each, if any."""
        # The repair sweep's jobs, a workflow's first steps, the steps a worker released: at
        # least once, since a worker runs a job id once however many copies arrive.
        now = self.clock()
        pending = [_Pending(JobRequest(job.type), job, *self._message(job, now)) for job in jobs]
        errors = list(await self._publish(pending))
        published = [p.job for p, error in zip(pending, errors, strict=True) if error is None]
        if published:
            await self.store.confirm_jobs([self._confirmation(job) for job in published])
        return errors

    async def release(self, job_ids: Sequence[str]) -> None:
        """Publish the workflow steps a worker's run window released (on a ``StoreError``, the repair sweep does)."""
        jobs = [job for i in job_ids if (job := await self.store.get_job(i)) is not None]
        released = [job for job in jobs if job.status is JobStatus.QUEUED]
        for job, error in zip(released, await self.publish_stored(released), strict=True):
            if error is not None:
                logger.warning("released step {} not published yet: {}", job.id, error)

    async def keep_repairing(self) -> None:
        """Run ``repair`` a few times per ``repair_after`` until cancelled (the API process does)."""
        while True:
            try:
                while await self.repair() > 0:  # a full sweep: there may be more
                    pass
            except TaskqError as exc:  # the store or broker is down: the next round tries again
                logger.warning("repair sweep failed: {}", exc)
            except Exception as exc:  # a bug must not end the sweeps for the process's life
                logger.opt(exception=exc).error("repair sweep failed unexpectedly")
            await asyncio.sleep(self.settings.repair_after / 3)

    def _count(self, request: JobRequest, result: Submitted | TaskqError) -> None:
        group = self.group_of(request.type) or UNKNOWN_GROUP
        replayed = isinstance(result, Submitted) and result.replayed
        outcome = outcome_of(result if isinstance(result, TaskqError) else None, replayed=replayed)
        self._counters(request.source, group, request.priority.value, outcome).inc()

    async def get(self, job_id: str, viewer: Viewer) -> JobRecord:
        """Return the job, if ``viewer`` may see it (else ``JobNotFoundError``, as for an unknown id)."""
        await self.settle()
        return opened(await get_visible(self.store, viewer, job_id), self.sealer)

    async def list_jobs(self, viewer: Viewer, search: JobSearch) -> JobPage:
        """Return one page of the jobs ``viewer`` may see, newest first (see ``list_visible``)."""
        await self.settle()
        page = await list_visible(self.store, viewer, search)
        return replace(page, jobs=[opened(job, self.sealer) for job in page.jobs])

    async def cancel(self, job_id: str, viewer: Viewer) -> JobRecord:
        """Cancel a job that has not started (``JobStateError`` once it has); its worker acks it unrun."""
        found = await self.get(job_id, viewer)  # the tenant never changes, so this check holds
        if found.workflow_id is not None:
            raise JobStateError(
                f"job {job_id} is a step of workflow {found.workflow_id}; cancel the workflow "
                "(DELETE /workflows/{id}), which cancels every step not started"
            )
        now = self.clock()
        job = await self.store.transition(
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
        return opened(job, self.sealer)

    async def follow_up(self, job: JobRecord) -> None:
        """Enqueue the callback of a job that ended with a ``callback_url``, at most once per end (on an error: call again)."""
        # Delivered by the built-in callbacks group (``webhooks.callbacks``). Its key names the job
        # and its final status, so announcing the same end twice enqueues one callback; it lives in
        # the ``callback`` source's space, which no caller's key can reach.
        if job.callback_url is None or job.status not in ANNOUNCED or job.type == CALLBACK_JOB_TYPE:
            return
        event, view = f"job.{job.status.value}", job_view(opened(job, self.sealer))
        request = JobRequest(
            type=CALLBACK_JOB_TYPE,
            payload={"url": job.callback_url, "event": event, "job": view},
            priority=job.priority,
            idempotency_key=f"callback:{job.id}:{job.status.value}",
            correlation_id=job.correlation_id or job.id,
            source="callback",
            tenant=job.tenant,
        )
        await self.submit_reserved(request, producer=TASKQ)

    async def prepare_job(self, request: JobRequest, now: datetime) -> JobRecord:
        """Check ``request`` as ``submit`` does and return the job it makes, not stored (a large payload goes to the blob store)."""
        return (await self._prepare(request, now, None)).job

    async def _prepare(self, request: JobRequest, now: datetime, producer: str | None) -> _Pending:
        """Check ``request`` and return its job, message and route (a large payload goes to the blob store)."""
        group = self._group(request.type, producer)
        # Strings the broker or the store cannot hold, whichever door the request came in by.
        for field in ("correlation_id", "idempotency_key"):
            value = getattr(request, field)
            problem = None if value is None else limits.short_string_problem(value)
            if problem:
                raise JobRejectedError(f"{field} {problem}", field=field)
        url = request.callback_url
        if url is not None and (len(url) > limits.MAX_URL_CHARS or limits.text_problem(url)):
            raise JobRejectedError(
                f"callback_url must be at most {limits.MAX_URL_CHARS} printable characters",
                field="callback_url",
            )
        if url is not None and self.callback_check is not None:
            refused = await self.callback_check(url)
            if refused is not None:
                raise JobRejectedError(f"callback_url is refused: {refused}", field="callback_url")
        not_before = self._not_before(request, now)
        job_id = request.job_id or new_job_id()
        payload, ref = await self._offload(job_id, request.payload)
        job = JobRecord(
            id=job_id,
            type=request.type,
            status=JobStatus.SCHEDULED if not_before is not None else JobStatus.QUEUED,
            priority=request.priority,
            created_at=now,
            updated_at=now,
            payload=payload,
            payload_ref=ref.model_dump() if ref else None,
            max_attempts=request.max_attempts,
            idempotency_key=request.idempotency_key,
            correlation_id=request.correlation_id,
            callback_url=request.callback_url or group.spec.callback_url,
            not_before=not_before,
            tenant=request.tenant,
            trace_id=tracing.trace_id(),  # the request's trace, which its message carries on
        )
        return _Pending(request, job, *self._message(job, now, ref))

    def _message(
        self, job: JobRecord, now: datetime, ref: PayloadRef | None = None
    ) -> tuple[Envelope, Route]:
        """Return the envelope ``job`` is published as, and its route (a delay tier if not due)."""
        if ref is None and job.payload_ref is not None:
            ref = PayloadRef.model_validate(job.payload_ref)
        # Every field was checked on the way in (request schema, type and delay checks), so
        # the envelope is built without validating them a second time on the hot path.
        sealed = token_of(job.payload)
        envelope = Envelope.model_construct(
            id=job.id,
            type=job.type,
            payload=job.payload if sealed is None else None,
            payload_ref=ref,
            payload_enc=sealed,
            priority=job.priority,
            max_attempts=job.max_attempts,
            idempotency_key=job.idempotency_key or job.id,
            created_at=job.created_at,
            not_before=job.not_before,
            correlation_id=job.correlation_id,
            tenant=job.tenant,
        )
        if job.not_before is None or job.not_before <= now:
            return envelope, job_route(self.topology, envelope)
        delay_ms = int((job.not_before - now).total_seconds() * 1000)  # > 0: not due yet
        return envelope, delay_route(self.topology, envelope, delay_ms)

    def _new_job(self, pending: _Pending) -> NewJob:
        request = pending.request
        key = request.claim_key()
        return NewJob(
            pending.job,
            claim=(key, request.fingerprint()) if key else None,
            lease_s=self.settings.idempotency_lease,
            confirm_within=None if _published_first(pending) else self.settings.repair_after,
        )

    def group_of(self, job_type: str) -> str | None:
        """Return the name of the group that takes ``job_type``, or ``None``."""
        group = self._lookup(job_type).group
        return None if group is None else group.name

    def _group(self, job_type: str, producer: str | None) -> CompiledGroup:
        """Return the group that takes ``job_type``, refusing a reserved, malformed or unknown type."""
        group, problem, owners = self._lookup(job_type)
        if owners and all(r.producer != producer for r in owners):
            raise ReservedJobTypeError(
                f"job type {job_type!r} is reserved: {owners[0].why}; submit a type of your own",
                field="type",
            )
        if problem is not None:
            raise JobRejectedError(f"type: {problem}", field="type")
        if group is None:
            accepted = ", ".join(self.topology.job_patterns())
            raise UnknownJobTypeError(
                f"unknown job type {job_type!r}; accepted types and patterns: {accepted}",
                field="type",
            )
        return group

    def _lookup(self, job_type: str) -> _Type:
        """Return what the topology says of ``job_type``, remembered per type."""
        found = self._types.get(job_type)
        if found is None:
            problem = limits.job_type_problem(job_type, allow_wildcards=False)
            group = None if problem else self.topology.group_for(job_type)
            found = _Type(group, problem, tuple(reserving(self._reserved, job_type)))
            if len(self._types) < 10_000:  # bounded: clients choose the types they send
                self._types[job_type] = found
        return found

    def _not_before(self, request: JobRequest, now: datetime) -> datetime | None:
        if request.delay is not None and request.run_at is not None:
            raise JobRejectedError("give either delay or run_at, not both", field="delay")
        when = None
        if request.run_at is not None:
            try:
                when = limits.utc_time(request.run_at)
            except ValueError as exc:
                raise JobRejectedError(f"run_at {exc}", field="run_at") from None
        if request.delay is not None:
            if not 0 <= request.delay <= limits.MAX_DELAY_S:  # NaN too: nothing overflows
                raise JobRejectedError(
                    f"delay must be 0-{limits.MAX_DELAY_S:.0f} seconds", field="delay"
                )
            when = now + timedelta(seconds=request.delay)
        if when is None or when <= now:
            return None
        if (when - now).total_seconds() > self.settings.max_delay:
            field = "run_at" if request.run_at is not None else "delay"
            raise JobRejectedError(
                f"{field} is more than {self.settings.max_delay:.0f} s ahead; the limit is "
                "TASKQ_MAX_DELAY",
                field=field,
            )
        return when

    async def _offload(
        self, job_id: str, payload: JsonValue
    ) -> tuple[JsonValue, PayloadRef | None]:
        """Store a large payload in the blob store (claim check), sealed for this job with data keys."""
        if payload is None:
            return None, None
        if token_of(payload) is not None:  # would be taken for a sealed payload
            raise JobRejectedError(
                f"payload may not be an object whose only key is {SEALED!r}", field="payload"
            )
        data = orjson.dumps(payload)
        problem = limits.payload_problem(data)
        if problem:  # PostgreSQL's jsonb cannot hold it: refused for every store alike
            raise JobRejectedError(problem, field="payload")
        limit = self.settings.claim_check_bytes
        sealer = self.sealer
        if limit == 0 or len(data) <= limit:
            return (sealer.seal_value(job_id, data) if sealer.enabled else payload), None
        if sealer.enabled:
            sealed = sealer.seal(job_id, data).encode()
            return None, await self._blobs.put(blob_key(job_id), sealed, SEALED_CONTENT_TYPE)
        return None, await self._blobs.put(blob_key(job_id), data, "application/json")

    async def _confirm_all(self, pendings: Sequence[_Pending]) -> list[Submitted]:
        """Record the confirms and return the answers."""
        # Awaited for keyed jobs (a replay must find the answer), in the background for the
        # others: a confirm lost to a crash costs one more copy of the message, no more.
        keyed = []
        for pending in pendings:
            if _published_first(pending):  # no publish deadline to clear: its row is written behind
                continue
            confirmation = self._confirmation(pending.job)
            if confirmation.response is None:
                self._unrecorded.append(confirmation)
            else:
                keyed.append(self._confirms.submit(confirmation))
        if len(self._unrecorded) >= _HOLD_CONFIRMS:  # no insert came along for a while
            self._confirms.post(self._unrecorded.pop())
        if keyed:
            await asyncio.gather(*keyed)
        if self.settings.submit_events:
            # Off by default: an event per accepted job costs about a third of the ingest
            # rate (bench/http_ingest.py), and watchers start from the stored state anyway.
            for pending in pendings:
                await self._announce(pending.job)
        return [Submitted(p.job.id, p.job) for p in pendings]

    def _confirmation(self, job: JobRecord) -> Confirmed:
        """Return the confirm of ``job``, with the answer a replay of its key finds."""
        if job.idempotency_key is None:
            return Confirmed(job.id)
        return Confirmed(job.id, orjson.dumps(job_view(job)), self.settings.idempotency_ttl)

    async def _create_jobs(self, items: Sequence[NewJob], *, durable: bool = True) -> list[Claim]:
        """Insert a batch of jobs, recording the confirms held so far in the same write."""
        held, self._unrecorded = self._unrecorded, []
        try:
            return await self.store.create_jobs(items, confirmed=held, durable=durable)
        except BaseException:
            self._unrecorded[:0] = held
            raise

    async def _write_rows(self, items: Sequence[NewJob]) -> list[None]:
        """Insert the rows of confirmed jobs in one transaction (the row coalescer's write)."""
        try:
            await self._create_jobs(items, durable=False)
        except TaskqError as exc:  # the jobs are on the broker: their workers write the rows
            logger.warning("rows of {} confirmed jobs not written: {}", len(items), exc)
        except Exception as exc:  # nobody awaits these rows: a bug must be heard here
            logger.opt(exception=exc).error("rows of {} confirmed jobs not written", len(items))
        return [None] * len(items)

    async def _confirm_jobs(self, items: Sequence[Confirmed]) -> list[None]:
        """Record a batch of confirms, and those held for the next insert (the coalescer's write)."""
        held, self._unrecorded = self._unrecorded, []
        try:
            await self.store.confirm_jobs([*held, *items])
        except TaskqError as exc:
            # Awaited (keyed) confirms get the error; for the others it is only logged: their
            # jobs are on the broker, and the repair sweep publishes them once more.
            logger.warning("confirms of {} jobs not recorded: {}", len(held) + len(items), exc)
            raise
        return [None] * len(items)

    async def _announce(self, job: JobRecord) -> None:
        # Events are advisory (the store is the truth), so a lost one is logged, not fatal.
        try:
            await self._publisher.publish_events([(event_key(job), event_body(job))])
        except TaskqError as exc:
            logger.warning("status event for job {} not published: {}", job.id, exc)


ANNOUNCED = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED})
"""The final statuses a job's callback reports."""


def _published_first(pending: _Pending) -> bool:
    """Return whether the job is published before its row is written (see ``Submitter._send_all``)."""
    # Only a job whose message carries all its row holds: no key to claim first, no callback
    # URL (the envelope has none); a delayed job's row is how it is seen and cancelled.
    job = pending.job
    return job.idempotency_key is None and job.callback_url is None and job.not_before is None

"""What the job store holds, and the ``JobStore`` port every backend implements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from jobstore.credentials import CredentialStore
from topology.names import DEFAULT_TENANT
from topology.priority import Priority


class JobStatus(StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"  # accepted, waiting for its delay or run_at
    QUEUED = "queued"  # on the broker, waiting for a worker
    RUNNING = "running"
    RETRYING = "retrying"  # failed, waiting in a delay tier for another attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed for good without being dead-lettered (e.g. never enqueued)
    DEAD = "dead"  # in the dead-letter queue
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Return whether nothing more happens to a job in this state (short of a DLQ replay)."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as the store keeps it; JSON fields hold already-decoded JSON values."""

    id: str
    type: str
    status: JobStatus
    priority: Priority
    created_at: datetime
    updated_at: datetime
    payload: Any = None
    payload_ref: dict[str, Any] | None = None
    attempts: int = 0
    max_attempts: int | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    callback_url: str | None = None
    not_before: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    result: Any = None
    tenant: str = DEFAULT_TENANT  # who submitted it: only credentials of this tenant see it


SETTABLE = frozenset(JobRecord.__dataclass_fields__) - {"id", "status", "tenant"}
"""The job fields ``transition`` may set (the id and tenant never change; the status is its argument)."""


def check_settable(fields: Iterable[str]) -> None:
    """Refuse fields ``transition`` cannot set.

    Raises:
        TypeError: naming the fields, and the ones that can be set.
    """
    unknown = sorted(set(fields) - SETTABLE)
    if unknown:
        raise TypeError(
            f"transition() cannot set {', '.join(unknown)}; settable: {', '.join(sorted(SETTABLE))}"
        )


class ClaimState(StrEnum):
    """What claiming a submission idempotency key found."""

    NEW = "new"  # the key is ours now, pointing at the job id we passed
    IN_FLIGHT = "in_flight"  # another request holds it and has not finished (HTTP 409)
    DONE = "done"  # a finished request holds it: replay its response
    MISMATCH = "mismatch"  # the key was used with a different request body (HTTP 422)


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming an idempotency key."""

    state: ClaimState
    job_id: str
    response: bytes | None = None  # the stored response body when state is DONE


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job to insert, with the idempotency key to claim first (``(key, request_hash)``).

    ``confirm_within``: the seconds its submitter has to publish it and see it confirmed
    (``confirm_jobs``); past them ``take_unconfirmed`` hands the job to a repair sweep. ``None``
    records no deadline: the job is taken to be on the broker already.
    """

    job: JobRecord
    claim: tuple[str, str] | None = None
    lease_s: float = 60.0
    confirm_within: float | None = None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A job the broker confirmed; with ``response``, its idempotency claim is completed too."""

    job_id: str
    response: bytes | None = None  # what a replay of the job's key answers
    ttl_s: float = 0.0  # how long the response is replayed


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job listing and the cursor of the next page (``None`` at the end)."""

    jobs: list[JobRecord]
    next_cursor: str | None


class ExecutionState(StrEnum):
    """What claiming the right to run a job's effects found."""

    NEW = "new"  # the claim is ours until its lease runs out
    HELD = "held"  # another worker holds a live claim: leave the job to it
    DONE = "done"  # the effects happened already: ack without running (result given)


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of claiming an execution key, with the stored result when it was done."""

    state: ExecutionState
    job_id: str
    result: Any = None


STARTABLE = frozenset(
    {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING, JobStatus.RUNNING}
)
"""The statuses a worker may move to running (a crashed run is still ``running``)."""

SETTLED = _TERMINAL
"""The statuses in which a delivered job is acked without running."""


@dataclass(frozen=True, slots=True)
class RunStart:
    """A worker about to run a delivered job: claim its key, count the delivery, mark it running."""

    job_id: str
    key: str  # the execution key: the idempotency key, or the job id
    attempt: int
    lease_s: float
    started_at: datetime


class StartOutcome(StrEnum):
    """What starting a run found."""

    RUN = "run"  # the claim is ours, the delivery counted, the job marked running
    HELD = "held"  # another worker holds a live claim: leave the job to it
    DONE = "done"  # the effects happened already: the job is marked succeeded with ``result``
    SETTLED = "settled"  # the job ended already (succeeded, failed, dead, cancelled): ack it unrun


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The outcome of a ``RunStart``, with the job as the start left it (``None``: no such job)."""

    outcome: StartOutcome
    deliveries: int = 0  # the job's starts so far, this one included (RUN only)
    result: Any = None
    job: JobRecord | None = None


@dataclass(frozen=True, slots=True)
class RunFinish:
    """A run that succeeded: mark its key done with ``result`` and the job succeeded."""

    job_id: str
    key: str
    result: Any
    ttl_s: float
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One worker's circuit breaker for one dependency of one consumer group, as last reported."""

    group: str
    dependency: str
    worker: str  # hostname:pid of the worker process
    state: str  # closed, half_open or open
    failures: int  # consecutive failures when the state last changed
    changed_at: datetime


class JobStore(CredentialStore, Protocol):
    """Job records, submission idempotency keys and API keys; every method is atomic on its own."""

    async def migrate(self) -> int:
        """Apply pending schema migrations (safe to run from several processes); return the version."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailableError`` otherwise."""
        ...

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job``; with ``claim=(key, request_hash)`` first claim the idempotency key.

        The claim and the insert happen in one transaction: when the key is already held the
        job is not inserted and the returned ``Claim`` says why (IN_FLIGHT, DONE, MISMATCH).
        A held key whose lease expired without being completed can be claimed again (NEW).
        """
        ...

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = ()
    ) -> list[Claim]:
        """Run ``create_job`` for every item in one transaction; one ``Claim`` per item, in order.

        ``confirmed`` earlier jobs are recorded as ``confirm_jobs`` would, along with the
        insert: a submitter that keeps its confirms for the next insert pays one write, not
        two. A confirm left unrecorded only means the repair sweep publishes its job again.

        Items are taken in order, so a later item claiming a key an earlier one just claimed
        sees it held (IN_FLIGHT or MISMATCH), exactly as two separate calls would.
        """
        ...

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Record that the broker confirmed these jobs: clear their publish deadlines, in one go.

        An item with a response also marks the request of the key claimed for its job finished,
        keeping ``response`` to replay for ``ttl_s`` seconds; only while that key is still
        pending for the item's job, so a request whose lease ran out and whose key was claimed
        again does not complete the newer claim with its own answer.
        """
        ...

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Return queued or scheduled jobs whose publish deadline passed, oldest first.

        Each returned job's deadline moves ``lease_s`` seconds ahead, so concurrent sweeps
        take different jobs and a sweep that dies leaves them to the next. Deadlines left on
        jobs a worker has already moved on are cleared.
        """
        ...

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and release its idempotency key."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None`` when there is no such job."""
        ...

    async def list_jobs(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Return jobs newest first, filtered (by ``tenant`` too), ``limit`` per page, after ``cursor``."""
        ...

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` (and set ``fields``) only if its status is in ``allowed_from``.

        Returns the updated record, or ``None`` when the job does not exist or was in another
        state (compare-and-set: two racing transitions never both win).
        """
        ...

    async def claim_execution(self, key: str, job_id: str, *, lease_s: float) -> Execution:
        """Claim the right to run the effects of idempotency key ``key``, for ``lease_s`` seconds.

        NEW: the claim is ours (also when a previous holder's lease ran out: it crashed);
        HELD: another worker holds a live claim; DONE: the effects happened, ``result`` holds
        what the handler returned. Atomic: two racing claimants never both get NEW.
        """
        ...

    async def finish_execution(self, key: str, job_id: str, result: Any, *, ttl_s: float) -> None:
        """Mark the key's effects done with ``result``, remembered for ``ttl_s`` seconds.

        Only while ``job_id`` holds the claim, so a worker whose lease ran out cannot
        overwrite the outcome of the one that took over.
        """
        ...

    async def release_execution(self, key: str, job_id: str) -> None:
        """Give up ``job_id``'s claim (the attempt failed), so the next attempt can claim it."""
        ...

    async def count_delivery(self, job_id: str) -> int:
        """Add one to the job's delivery count and return it; it survives worker crashes.

        Returns 0 for an unknown job (nothing is recorded).
        """
        ...

    async def start_runs(self, items: Sequence[RunStart]) -> list[RunStarted]:
        """Start many runs at once; one ``RunStarted`` per item, in order.

        For each item, in order: a settled job is left alone (SETTLED); otherwise the
        execution key is claimed as ``claim_execution`` would (DONE also marks the job
        succeeded with the stored result); a NEW claim counts the delivery and moves the
        job to running with ``attempts`` and ``started_at`` (RUN).
        """
        ...

    async def finish_runs(self, items: Sequence[RunFinish]) -> list[JobRecord | None]:
        """Mark many runs' keys done and their jobs succeeded; the updated jobs, in order.

        A key is only marked done while the item's job holds its claim (as in
        ``finish_execution``); ``None`` for a job that is missing or no longer startable.
        """

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker)."""
        ...

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""
        ...

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker`` (it stopped)."""
        ...

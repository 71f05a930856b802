"""What the job store holds, and the ``JobStore`` port every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from jobstore.workflows import WorkflowStore
from topology.errors import SettingsError
from topology.names import DEFAULT_TENANT, Priority

if TYPE_CHECKING:  # the model loads without pydantic, so `taskctl --help` stays light
    from topology.envelope import Envelope


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
    trace_id: str | None = None  # the trace it was submitted in, when tracing is on
    workflow_id: str | None = None  # the workflow it is a step of, if any


# ``deliveries`` (the starts the poison bound counts) is set only to start a job's count anew.
SETTABLE = frozenset(JobRecord.__dataclass_fields__) - {"id", "status", "tenant"} | {"deliveries"}
"""The job fields ``transition`` may set (the id and tenant never change; the status is its argument)."""


def check_settable(fields: Iterable[str]) -> None:
    """Raise ``TypeError`` naming the fields ``transition`` cannot set, and the ones it can."""
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


def held_claim(request_hash: str, held_hash: str, job_id: str, state: str, response: Any) -> Claim:
    """Return what claiming a key another request holds found (its hash, job, state, response)."""
    if held_hash != request_hash:
        return Claim(ClaimState.MISMATCH, job_id)
    if state == "done":
        return Claim(ClaimState.DONE, job_id, response)
    return Claim(ClaimState.IN_FLIGHT, job_id)


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job to insert, with the idempotency key to claim first (``(key, request_hash)``)."""

    job: JobRecord
    claim: tuple[str, str] | None = None
    lease_s: float = 60.0
    # Seconds to see it confirmed (``confirm_jobs``) before ``take_unconfirmed`` hands it to a
    # repair sweep; None: no deadline, the job is taken to be on the broker already.
    confirm_within: float | None = None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A job the broker confirmed; with ``response``, its idempotency claim is completed too."""

    job_id: str
    response: bytes | None = None  # what a replay of the job's key answers
    ttl_s: float = 0.0  # how long the response is replayed


@dataclass(frozen=True, slots=True)
class DataChange:
    """A job's payload or result rewritten (re-sealed), if it still holds what was read."""

    job_id: str
    column: Literal["payload", "result"]
    old: Any
    new: Any


TimeRange = tuple[datetime | None, datetime | None]
"""A ``[from, before)`` range of times; ``None`` leaves that end open."""


@dataclass(frozen=True, slots=True)
class JobSearch:
    """Which jobs a listing returns (a ``None`` filter keeps every job), and which page (``cursor``: the previous page's)."""

    tenant: str | None = None
    status: JobStatus | None = None
    type: str | None = None
    correlation_id: str | None = None
    created: TimeRange = (None, None)  # creation times
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job listing and the cursor of the next page (``None`` at the end)."""

    jobs: list[JobRecord]
    next_cursor: str | None


BREAKER_CHANGES_KEPT = 1000
"""How many breaker transitions the store keeps (the oldest go as new ones come)."""

STARTABLE = frozenset(
    {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING, JobStatus.RUNNING}
)
"""The statuses a worker may move to running (a crashed run is still ``running``)."""


# The run types below are made per job in a worker's hot path: plain slotted dataclasses (a
# frozen one costs five times as much to build); nothing changes them once made.
@dataclass(slots=True)
class RunStart:
    """A worker about to run a delivered job: claim it, count the delivery, mark it running."""

    job_id: str
    attempt: int
    lease_s: float  # how long the claim holds before another worker may take the job over
    started_at: datetime
    # The job as its message tells it: the row to create first when there is none yet (a job
    # without a key is published before its row is written, so its message can overtake it).
    envelope: Envelope | None = None


class StartOutcome(StrEnum):
    """What starting a run found."""

    RUN = "run"  # the claim is ours, the delivery counted, the job marked running
    HELD = "held"  # another run holds a live claim: leave the job to it
    SETTLED = "settled"  # the job ended already (succeeded, dead, cancelled, failed): ack it unrun


@dataclass(slots=True)
class RunJob:
    """What a worker reads of a job's row in a run window (the message carries the rest)."""

    id: str
    type: str
    status: JobStatus
    attempts: int
    last_error: str | None
    tenant: str
    callback_url: str | None
    workflow_id: str | None = None
    # Set by an end that finished a step: the jobs of its workflow it released (the next
    # step, a chord's callback), stored queued, for the worker to publish.
    released: tuple[str, ...] = ()


@dataclass(slots=True)
class RunStarted:
    """The outcome of a ``RunStart``, with the job as the start left it (``None``: no such job)."""

    outcome: StartOutcome
    # The job's starts so far, this one included; a run's ``RunEnd`` names it, so a run whose
    # claim a later start took over cannot end the job.
    deliveries: int = 0
    job: RunJob | None = None


@dataclass(slots=True)
class RunEnd:
    """How a started run ended: the job's new status, or ``status=None`` to give the claim back."""

    job_id: str
    # Applied only while the job is startable and this (the run's ``RunStarted.deliveries``) is
    # still its latest start; 0 ends a job no run started (an unknown type), while none holds it.
    run: int
    status: JobStatus | None  # SUCCEEDED, RETRYING or DEAD; None: release, status unchanged
    at: datetime
    result: Any = None
    error: str | None = None
    # The job as its message tells it, for an end without a run (see ``RunStart.envelope``).
    envelope: Envelope | None = None
    # Written with the end, in its transaction, when the end is applied: a failure's step.
    event: JobEvent | None = None


class JobEventKind(StrEnum):
    """What happened to a job besides what its row says (submitted, started, finished)."""

    RETRIED = "retried"  # an attempt failed; the next waits in a delay tier
    DEAD = "dead"  # an attempt failed for good, or the job never ran: dead-lettered
    REPLAYED = "replayed"  # sent back to work from the dead-letter queue


@dataclass(slots=True)
class JobEvent:
    """One step of a job's life that its row does not keep: a failed attempt, a dead-lettering, a replay."""

    job_id: str
    at: datetime
    kind: JobEventKind
    attempt: int  # the attempt that failed (retried, dead), or the one the job had (replayed)
    error: str | None = None
    took_ms: int | None = None  # how long the failed attempt ran (None: it never ran)
    delay_ms: int | None = None  # retried: the wait before the next attempt
    tier: str | None = None  # retried: the delay tier it waits in
    # dead: why (exhausted, permanent, contract, poison); replayed: why it had died.
    reason: str | None = None
    trace_id: str | None = None


KeptFor = Callable[[str, bool], float]
"""The seconds a finished job of a type is kept, given the type and whether it is dead."""


@dataclass(frozen=True, slots=True)
class Swept:
    """What one ``sweep`` did: jobs deleted, the blobs they referenced, the asked ids no job has."""

    jobs: int
    blobs: list[str]  # the uris of the deleted jobs' claim-checked payloads
    unknown: list[str]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key: who it speaks for and what it may do; the secret itself is never stored."""

    id: str  # the public part of the key, by which it is looked up
    name: str
    secret_hash: bytes  # HMAC-SHA256 of the secret part
    tenant: str
    scopes: tuple[str, ...]
    job_types: tuple[str, ...] | None  # topic patterns it may touch; None: every job type
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        """Return whether the key is neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One worker's circuit breaker for one dependency of one consumer group, as last reported."""

    group: str
    dependency: str
    worker: str  # hostname:pid of the worker process
    state: str  # closed, half_open or open
    failures: int  # consecutive failures when the state last changed
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One dead-letter replay or purge: who started it, when, on what, and what it did."""

    id: str  # UUIDv7: id order is start order
    at: datetime
    actor: str  # the credential's id (key:<id>, jwt:<issuer>:<subject>)
    actor_name: str  # the key's name, or the token's subject
    tenant: str
    group: str
    action: Literal["replay", "purge"]
    target: str  # which dead letters: the filter as the operator gave it
    rate: float | None = None  # replays per second (a replay only)
    matched: int | None = None  # None until it ended
    kept: int | None = None
    error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule's memory: where counting starts, its last occurrence fired, whether it is paused."""

    name: str
    since: datetime  # occurrences at or before this never fire (first seen, or last resumed)
    updated_at: datetime
    last_due: datetime | None = None  # the due time of the last occurrence fired
    last_job_id: str | None = None  # the job that occurrence made
    paused_at: datetime | None = None

    def fires_after(self) -> datetime:
        """Return the time after which occurrences may still fire."""
        return self.since if self.last_due is None else max(self.since, self.last_due)


class ScheduleStore(Protocol):
    """Schedules' memory; every method is atomic on its own."""

    async def schedule_states(self, names: Sequence[str], at: datetime) -> dict[str, ScheduleState]:
        """Return the state of each named schedule, counting those never seen from ``at``."""

    async def record_fired(self, name: str, due: datetime, job_id: str, at: datetime) -> None:
        """Record that ``name``'s occurrence at ``due`` made ``job_id`` (never moving back in time)."""

    async def pause_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Pause ``name`` from ``at`` (pausing a paused schedule keeps the first time)."""

    async def resume_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Resume ``name``: occurrences that fell due while it was paused never fire."""


class CredentialStore(Protocol):
    """Where API keys live; every method is atomic on its own."""

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert ``key``; raise ``StoreError`` when its id is taken."""

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key with id ``key_id`` (revoked and expired ones too), or ``None``."""

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every key, oldest first."""

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked at ``at`` (once: a second revoke keeps the first time); ``None`` if unknown."""

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record that the key was used at ``at`` (never moving its last use back in time)."""


class JobStore(CredentialStore, WorkflowStore, ScheduleStore, Protocol):
    """Job records, submission idempotency keys, API keys, workflows and schedules; every method is atomic on its own."""

    async def migrate(self) -> int:
        """Apply pending schema migrations (safe to run from several processes); return the version."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailableError`` otherwise."""

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert the jobs in order (not one whose key another request holds), and ``confirm_jobs(confirmed)``, in one transaction; one ``Claim`` per item."""
        # ``durable=False`` lets the commit return before it is on disk, where the store can: for
        # jobs whose messages are their record (a crash of the store may lose these rows).

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines; with a response, also complete the key still pending for the job."""

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Return queued or scheduled jobs past their publish deadline, oldest first, moving it ``lease_s`` ahead."""

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and release its idempotency key."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None`` when there is no such job."""

    async def list_jobs(self, search: JobSearch = JobSearch()) -> JobPage:
        """Return the jobs ``search`` keeps, newest first, one page of them."""

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` and set ``fields`` if its status is in ``allowed_from``; ``None`` if not (compare-and-set)."""

    async def replace_data(self, changes: Sequence[DataChange]) -> None:
        """Write each change's new payload or result, where the column still holds its old value."""

    async def revive(self, job_id: str, at: datetime) -> bool:
        """Move a dead-lettered job (dead, or left queued/running/retrying) back to queued, attempts and deliveries reset; whether it was."""

    async def run_window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        """End then start a worker's runs (and count the workflow steps they end) in ONE transaction; the jobs the ends found, and each start's outcome."""

    async def sweep(self, kept_for: KeptFor, *, limit: int, ask: Sequence[str] = ()) -> Swept:
        """Delete up to ``limit`` final jobs (and keys) that ended over ``kept_for`` seconds ago, oldest first by type; say which ``ask`` ids have no job."""

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker), and log it as a transition (the latest ``BREAKER_CHANGES_KEPT`` are kept)."""

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker`` (it stopped)."""

    async def queued_counts(self) -> list[tuple[str, Priority, int]]:
        """Return how many jobs wait queued, by job type and priority, of every tenant."""

    async def record_audit(self, entry: AuditEntry) -> None:
        """Insert ``entry``, or replace the entry of its id (an operation that ended)."""

    async def list_audit(self, tenant: str, group: str, *, limit: int = 20) -> list[AuditEntry]:
        """Return the latest ``limit`` audit entries of ``tenant``'s operations on ``group``, newest first."""

    async def record_events(self, events: Sequence[JobEvent]) -> None:
        """Insert the events of jobs that exist (an event of a job since deleted is dropped)."""

    async def list_events(self, job_id: str, *, limit: int = 200) -> list[JobEvent]:
        """Return the job's first ``limit`` events, oldest first (they go with the job)."""

    async def list_breaker_changes(self, *, limit: int = 50) -> list[BreakerRecord]:
        """Return the latest ``limit`` breaker transitions ``record_breaker`` recorded, newest first."""


_FORMS = "sqlite:///relative/path.sqlite3, sqlite:////absolute/path.sqlite3 or postgresql://user@host:5432/db"


def open_store(url: str) -> JobStore:
    """Return the store for ``url`` without connecting (the first call connects)."""
    scheme, separator, rest = url.partition("://")
    # Each store is imported when its URL names it: a SQLite user never loads asyncpg.
    if separator and scheme in ("postgresql", "postgres"):
        from jobstore.postgres import PostgresJobStore

        return PostgresJobStore(url)
    if separator and scheme == "sqlite":
        # As in SQLAlchemy: three slashes then a relative path, four for an absolute one.
        if not rest.startswith("/") or len(rest) == 1:
            raise SettingsError(
                f"TASKQ_STORE_URL: a SQLite URL needs a file path and no host; use {_FORMS}"
            )
        from jobstore.sqlite import SqliteJobStore

        return SqliteJobStore(rest[1:])
    # Only the scheme is echoed: the rest of the URL may hold a password.
    raise SettingsError(
        f"TASKQ_STORE_URL: unsupported job store URL scheme {scheme if separator else ''!r}; use {_FORMS}"
    )

"""What a window of run ends and starts does to the jobs it names, worked out once for every store.

A store reads the window's jobs (under its write lock) into ``found_rows``, creates the rows
``missing_jobs`` names, hands them all to ``plan_window`` and writes the ends and starts it returns.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jobstore.model import (
    STARTABLE,
    JobRecord,
    JobStatus,
    RunEnd,
    RunJob,
    RunStart,
    RunStarted,
    StartOutcome,
)
from topology.sealing import SEALED

RUN_COLUMNS = (
    *("id", "type", "status", "attempts", "last_error", "tenant", "callback_url", "workflow_id"),
)
"""The columns of a ``RunJob``, in its fields' order."""
_STATUSES = {status.value: status for status in JobStatus}
# The fields a job's row takes from its message as they are.
_FROM_MESSAGE = (
    "id",
    "type",
    "priority",
    "created_at",
    "max_attempts",
    "correlation_id",
    "not_before",
    "tenant",
)


@dataclass(slots=True)
class Row:
    """A job as the window found it: what the worker needs, its delivery count, whether a run holds it."""

    job: RunJob
    deliveries: int
    held: bool


@dataclass(slots=True)
class Plan:
    """What to write for a window, and what to answer."""

    ended: list[RunJob | None]  # per end: the job it found, None where it does not apply
    started: list[RunStarted]  # per start
    ends: list[RunEnd]  # the ends to write
    starts: list[RunStart]  # the starts to write (claim, count, mark running)


def found_rows(records: Iterable[Any]) -> dict[str, Row]:
    """Return by job id the rows a window read: ``RUN_COLUMNS``, deliveries, whether a run holds it."""
    return {
        key: Row(
            RunJob(key, kind, _STATUSES[status], attempts, error, tenant, url, flow),
            count,
            bool(held),
        )
        for key, kind, status, attempts, error, tenant, url, flow, count, held in records
    }


def missing_jobs(
    found: Container[str], ends: Sequence[RunEnd], starts: Sequence[RunStart]
) -> list[JobRecord]:
    """Return the rows to create before the window's writes: one per job it found no row of, in id order.

    Starts and run-less ends carry their message's envelope, so the row made is the one the
    job's submitter inserts (whose own insert then finds the row and leaves it as it is).
    """
    made: dict[str, JobRecord] = {}
    items: list[RunEnd | RunStart] = [*ends, *starts]
    for item in items:
        envelope = item.envelope
        if envelope is not None and item.job_id not in found and item.job_id not in made:
            key = envelope.idempotency_key
            ref, sealed = envelope.payload_ref, envelope.payload_enc
            made[item.job_id] = JobRecord(
                **{name: getattr(envelope, name) for name in _FROM_MESSAGE},
                status=JobStatus.QUEUED,
                updated_at=envelope.created_at,
                payload=envelope.payload if sealed is None else {SEALED: sealed},
                payload_ref=None if ref is None else ref.model_dump(),
                idempotency_key=None if key == envelope.id else key,  # the id stands in for none
            )
    return [made[job_id] for job_id in sorted(made)]


def plan_window(rows: dict[str, Row], ends: Sequence[RunEnd], starts: Sequence[RunStart]) -> Plan:
    """Return what ``ends`` then ``starts`` do to ``rows`` (see ``JobStore.run_window``)."""
    rows = dict(rows)
    applied: list[RunJob | None] = []
    writes: list[RunEnd] = []
    for end in ends:
        row = rows.get(end.job_id)
        # run 0: an end without a run (an unknown type), applied while no run holds the job.
        if (
            row is None
            or row.job.status not in STARTABLE
            or (row.deliveries != end.run if end.run else row.held)
        ):
            applied.append(None)
            continue
        applied.append(row.job)
        writes.append(end)
        status = end.status or row.job.status
        job = RunJob(*_fields(row.job, status, row.job.attempts, end.error or row.job.last_error))
        rows[end.job_id] = Row(job, row.deliveries, held=False)
    started: list[RunStarted] = []
    claims: list[RunStart] = []
    for item in starts:
        row = rows.get(item.job_id)
        if row is None:
            started.append(RunStarted(StartOutcome.RUN))
        elif row.job.status.terminal or _stale(row.job, item.attempt):
            started.append(RunStarted(StartOutcome.SETTLED, row.deliveries, row.job))
        elif row.held:
            started.append(RunStarted(StartOutcome.HELD, row.deliveries, row.job))
        else:
            job = RunJob(*_fields(row.job, JobStatus.RUNNING, item.attempt, row.job.last_error))
            claims.append(item)
            # A later start of this window for the same job finds it held.
            rows[item.job_id] = Row(job, row.deliveries + 1, held=True)
            started.append(RunStarted(StartOutcome.RUN, row.deliveries + 1, job))
    return Plan(applied, started, writes, claims)


def _stale(job: RunJob, attempt: int) -> bool:
    """Return whether a start of ``attempt`` comes from a copy of an attempt already made.

    A job is published twice when its publish is repeated (the repair sweep, a stream entry
    read again); the copy may come after the first run failed, and must not run that attempt
    again. The retry's own message carries the next attempt, and a revived job starts from 0.
    """
    if job.status is JobStatus.RETRYING:
        return attempt <= job.attempts
    return attempt < job.attempts


def _fields(
    job: RunJob | JobRecord, status: JobStatus, attempts: int, last_error: str | None
) -> tuple[str, str, JobStatus, int, str | None, str, str | None, str | None]:
    return (
        *(job.id, job.type, status, attempts, last_error, job.tenant, job.callback_url),
        job.workflow_id,
    )

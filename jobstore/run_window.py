"""What a window of run ends and starts does to the jobs it names, worked out once for every store."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from jobstore.shared_sql import END_RUN, INSERT_EVENT, INSERT_JOB, Query, Talk, many
from jobstore.workflow_sql import WorkflowSql, step_ends
from topology.sealing import SEALED

RUN_COLUMNS = (
    *("id", "type", "status", "attempts", "last_error", "tenant", "callback_url", "workflow_id"),
)
"""The columns of a ``RunJob``, in its fields' order."""
START_RUN = (
    "UPDATE jobs SET status = 'running', attempts = $2, started_at = $3, updated_at = $3,"
    " deliveries = deliveries + 1, claim_until = {until} WHERE id = $1"
)
"""Claim a job, count its delivery and mark it running; a store fills in its claim's end (``$4``)."""
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
    """Return the rows to create before the window's writes, as the job's submitter inserts them: one per job it found no row of, in id order."""
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
    """Return whether a start of ``attempt`` comes from a copy of an attempt already made (a publish repeated)."""
    # The retry's own message carries the next attempt, and a revived job starts from 0.
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


class RunWindowSql(WorkflowSql):
    """Run windows over a store's conversations; the store says how it reads a window's rows and starts a run."""

    _start: str  # ``START_RUN`` in the store's terms

    async def run_window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        """End and start a window of runs in one transaction, its jobs' rows read (and locked) in id order."""
        return await self._talk(self._window(ends, starts))

    def _read_window(self, ids: Sequence[str]) -> Query:
        """Return the read of the jobs ``ids`` (``RUN_COLUMNS``, deliveries, whether a run holds each)."""
        raise NotImplementedError

    def _window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> Talk[tuple[list[RunJob | None], list[RunStarted]]]:
        # Each statement takes every item of the window at once: Python's work per statement
        # is what a row costs, far more than the database's.
        ids = sorted({e.job_id for e in ends} | {s.job_id for s in starts})
        rows = found_rows((yield self._read_window(ids)))
        created = missing_jobs(rows, ends, starts)
        if created:
            # A submitter's insert of the same job waits for (or is held off by) this
            # transaction, then finds the row; the second read finds (and locks) ours.
            yield many(INSERT_JOB, [self._row(job) for job in created])
            rows.update(found_rows((yield self._read_window([job.id for job in created]))))
        plan = plan_window(rows, ends, starts)
        yield many(END_RUN, [self._ended(end) for end in plan.ends])
        # Failures only: a window of successes writes none.
        yield many(
            INSERT_EVENT, [self.event_row(e.event) for e in plan.ends if e.event is not None]
        )
        steps = step_ends(ends, plan.ended)
        if steps:  # the steps of workflows these ends finished, counted in this transaction
            released = yield from self.advancing(steps, datetime.now(UTC))
            # Each ended job learns the steps its end released, for the worker to publish.
            for job in plan.ended:
                if job is not None and job.id in released:
                    job.released = released[job.id]
        claims = [
            (s.job_id, s.attempt, self._time_in(s.started_at), self._lease(s.lease_s)[0])
            for s in plan.starts
        ]
        yield many(self._start, claims)
        return plan.ended, plan.started

"""What a window of run ends and starts does to the jobs it names, worked out once for every store.

A store reads the window's jobs (under its write lock), hands them to ``plan_window`` and writes
the ends and starts it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobstore.model import (
    STARTABLE,
    JobStatus,
    RunEnd,
    RunJob,
    RunStart,
    RunStarted,
    StartOutcome,
)

RUN_COLUMNS = ("id", "type", "status", "attempts", "last_error", "tenant", "callback_url")
"""The columns of a ``RunJob``, in its fields' order."""
STATUSES = {status.value: status for status in JobStatus}


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
        elif row.job.status.terminal:
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


def _fields(
    job: RunJob, status: JobStatus, attempts: int, last_error: str | None
) -> tuple[str, str, JobStatus, int, str | None, str, str | None]:
    return (job.id, job.type, status, attempts, last_error, job.tenant, job.callback_url)

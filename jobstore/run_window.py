"""What a window of run ends and starts does to the jobs it names, worked out once for every store.

A store reads the window's jobs (under its write lock), hands them to ``plan_window`` and writes
the ends and starts it returns; the records it gives back are the jobs as those writes leave
them, worked out here instead of read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC

from jobstore.model import (
    STARTABLE,
    JobRecord,
    JobStatus,
    RunEnd,
    RunStart,
    RunStarted,
    StartOutcome,
)


@dataclass(frozen=True, slots=True)
class Row:
    """A job as the window found it: its record, its delivery count, and whether a run holds it."""

    job: JobRecord
    deliveries: int
    held: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write for a window, and what to answer."""

    ended: list[JobRecord | None]  # per end: the job as it left it, None where it did not apply
    started: list[RunStarted]  # per start
    ends: list[RunEnd]  # the ends to write
    starts: list[RunStart]  # the starts to write (claim, count, mark running)


def plan_window(rows: dict[str, Row], ends: Sequence[RunEnd], starts: Sequence[RunStart]) -> Plan:
    """Return what ``ends`` then ``starts`` do to ``rows`` (see ``JobStore.run_window``)."""
    rows = dict(rows)
    applied: list[JobRecord | None] = []
    writes: list[RunEnd] = []
    for end in ends:
        row = rows.get(end.job_id)
        # run 0: an end without a run (an unknown type), applied while no run holds the job.
        ok = (
            row is not None
            and row.job.status in STARTABLE
            and (row.deliveries == end.run if end.run else not row.held)
        )
        if not ok or row is None:
            applied.append(None)
            continue
        job = ended(row.job, end)
        applied.append(job)
        writes.append(end)
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
            when = item.started_at.astimezone(UTC)
            job = replace(
                row.job,
                status=JobStatus.RUNNING,
                attempts=item.attempt,
                started_at=when,
                updated_at=when,
            )
            claims.append(item)
            # A later start of this window for the same job finds it held.
            rows[item.job_id] = Row(job, row.deliveries + 1, held=True)
            started.append(RunStarted(StartOutcome.RUN, row.deliveries + 1, job))
    return Plan(applied, started, writes, claims)


def ended(job: JobRecord, end: RunEnd) -> JobRecord:
    """Return ``job`` as ``end`` leaves it."""
    when = end.at.astimezone(UTC)
    if end.status is None:
        return replace(job, updated_at=when, last_error=end.error or job.last_error)
    return replace(
        job,
        status=end.status,
        result=end.result if end.result is not None else job.result,
        last_error=end.error or job.last_error,
        finished_at=when if end.status.terminal else job.finished_at,
        updated_at=when,
    )

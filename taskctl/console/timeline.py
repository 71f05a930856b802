"""A job's timeline: its row's times and its recorded events, as the steps of its life in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jobstore.model import JobEvent, JobEventKind, JobRecord, JobStatus
from taskctl.console.web import seconds_text, when

REASONS = {
    "exhausted": "every attempt failed",
    "permanent": "the handler said no attempt can succeed",
    "contract": "undecodable, of an unknown type, or a payload its handler cannot take",
    "poison": "started too often without finishing",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a job's life as its page lists it."""

    at: datetime | None
    what: str
    detail: str = ""
    error: str | None = None
    attention: bool = False  # a failure for good: coloured
    trace_id: str | None = None  # shown when it is not the job's own trace


def timeline(job: JobRecord, events: Sequence[JobEvent]) -> list[Step]:
    """Return the job's steps: submitted, each failed attempt, dead-lettered, replayed, and where it is now."""
    later = job.not_before is not None and job.not_before > job.created_at
    steps = [
        Step(job.created_at, "Submitted", f"to run from {when(job.not_before)}" if later else "")
    ]
    ordered = sorted(events, key=lambda e: e.at)  # written by several processes: by time
    steps += [_step(event, job.trace_id) for event in ordered]
    last = ordered[-1].kind if ordered else None
    now = _now(job, dead_told=last is JobEventKind.DEAD)
    if now is not None:
        steps.append(now)
    return steps


def duration(ms: float | None) -> str:
    """Return a duration to the millisecond below a second, else as ``seconds_text`` says it."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{int(ms)} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return seconds_text(ms / 1000)


def _step(event: JobEvent, trace_id: str | None) -> Step:
    trace = event.trace_id if event.trace_id != trace_id else None
    ran = "" if event.took_ms is None else f"ran {duration(event.took_ms)}"
    if event.kind is JobEventKind.RETRIED:
        through = f" through the {event.tier} delay tier" if event.tier else ""
        detail = _join(ran, f"retried in {duration(event.delay_ms)}{through}")
        return Step(event.at, f"Attempt {event.attempt} failed", detail, event.error, False, trace)
    if event.kind is JobEventKind.DEAD:
        what = f"Attempt {event.attempt} failed; dead-lettered" if ran else "Dead-lettered"
        detail = _join(ran, _reason(event.reason))
        return Step(event.at, what, detail, event.error, True, trace)
    detail = _join("attempts start again at 1", f"it had died: {_reason(event.reason)}")
    return Step(event.at, "Replayed from the dead-letter queue", detail, None, False, trace)


def _now(job: JobRecord, *, dead_told: bool) -> Step | None:
    """Return the step the job's row tells and no event does: running, succeeded, cancelled, failed."""
    status = job.status
    ran = None
    if job.started_at is not None and job.finished_at is not None:
        ran = (job.finished_at - job.started_at).total_seconds() * 1000
    if status is JobStatus.RUNNING:
        return Step(job.started_at, f"Attempt {job.attempts} running")
    if status is JobStatus.SUCCEEDED:
        return Step(job.finished_at, f"Attempt {job.attempts} succeeded", f"ran {duration(ran)}")
    if status is JobStatus.CANCELLED:
        return Step(job.finished_at, "Cancelled", "before it started")
    if status is JobStatus.FAILED:
        return Step(job.finished_at, "Failed", "", job.last_error, True)
    if status is JobStatus.DEAD and not dead_told:  # died before its events were recorded
        return Step(job.finished_at, "Dead-lettered", "", job.last_error, True)
    return None


def _reason(reason: str | None) -> str:
    if reason is None:
        return ""
    meaning = REASONS.get(reason)
    return f"{reason} ({meaning})" if meaning else reason


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)

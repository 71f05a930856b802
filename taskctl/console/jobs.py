"""The job pages: a search with cursor pages, and one job with its live status and its timeline (its row's times and recorded events, as the steps of its life in order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from jobstore.model import JobEvent, JobEventKind, JobRecord, JobSearch, JobStatus
from producers.tenancy import job_view
from taskctl.console.sessions import PATH
from taskctl.console.sse import KEEPALIVE, KEEPALIVE_S, STREAM_S, frame, stream
from taskctl.console.web import MAX_TEXT, Visit, redirect, seconds_text, when
from telemetry.redaction import redact_text
from topology.errors import JobNotFoundError, JobRejectedError

PAGE = 50
EVENTS = 200  # a job's first steps shown; a job retried more often is cut there
FILTERS = ("type", "status", "correlation_id", "created_from", "created_before")


def _time(visit: Visit, name: str) -> datetime | None:
    """Return a ``datetime-local`` field as a UTC time (the form says the times are UTC)."""
    text = visit.field(name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise JobRejectedError(f"{name}: not a time (YYYY-MM-DDTHH:MM)", field=name) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _status(visit: Visit) -> JobStatus | None:
    value = visit.field("status")
    try:
        return None if value is None else JobStatus(value)
    except ValueError as exc:
        raise JobRejectedError(f"status: no status {str(value)[:40]!r}", field="status") from exc


async def search(visit: Visit) -> Response:
    """Show a page of the caller's jobs that match the search, newest first."""
    job_id = visit.field("id", MAX_TEXT)
    if job_id is not None:  # an id names one job: open it, if the caller may see it
        try:
            await visit.services.submitter.get(job_id, visit.caller.viewer)
        except JobNotFoundError as exc:
            return visit.page(
                "jobs.html",
                404,
                jobs=[],
                query={},
                statuses=list(JobStatus),
                next_url=None,
                first_url=None,
                notice=str(exc),
            )
        return redirect(f"{PATH}/jobs/{job_id}")
    cursor = visit.field("cursor", MAX_TEXT)
    search = JobSearch(
        status=_status(visit),
        type=visit.field("type", MAX_TEXT),
        correlation_id=visit.field("correlation_id", MAX_TEXT),
        created=(_time(visit, "created_from"), _time(visit, "created_before")),
        limit=PAGE,
        cursor=cursor,
    )
    page = await visit.services.submitter.list_jobs(visit.caller.viewer, search)
    query = {name: value for name in FILTERS if (value := visit.field(name)) is not None}
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{PATH}/jobs?{urlencode({**query, 'cursor': page.next_cursor})}"
    first_url = f"{PATH}/jobs?{urlencode(query)}" if cursor else None
    return visit.page(
        "jobs.html",
        jobs=page.jobs,
        query=query,
        statuses=list(JobStatus),
        next_url=next_url,
        first_url=first_url,
        notice=None,
    )


async def job(visit: Visit) -> Response:
    """Show one job: its timeline, fields, payload and result (redacted), and its live status."""
    job_id = visit.request.path_params["job_id"]
    submitter = visit.services.submitter
    found = await submitter.get(job_id, visit.caller.viewer)  # the caller may see its events too
    events = await submitter.store.list_events(found.id, limit=EVENTS)
    group = submitter.group_of(found.type)
    steps = timeline(found, events)
    return visit.page("job.html", job=found, group=group, steps=steps, cut=len(events) >= EVENTS)


def _live(fields: dict[str, Any]) -> dict[str, Any]:
    """Return what the job page updates live: status, attempts, update time, last error."""
    error, updated = fields.get("last_error"), fields.get("updated_at")
    try:
        shown = when(datetime.fromisoformat(updated)) if isinstance(updated, str) else None
    except ValueError:
        shown = None
    return {
        "status": fields.get("status"),
        "attempts": fields.get("attempts"),
        "updated_at": shown,
        "last_error": None if error is None else redact_text(str(error)),
    }


async def events(visit: Visit) -> Response:
    """Stream the job's status: now, then every change until it ends (Server-Sent Events)."""
    job_id = visit.request.path_params["job_id"]
    services = visit.services
    viewer = visit.caller.viewer
    await services.submitter.get(job_id, viewer)  # an unknown job is a 404, not a stream

    async def changes() -> AsyncIterator[bytes]:
        async with services.hub.watch(viewer, job_id=job_id) as watcher:
            # Read after watching starts, so no change falls between the read and the watch.
            current = job_view(await services.submitter.get(job_id, viewer))
            deadline = time.monotonic() + STREAM_S
            while True:
                yield frame("status", _live(current))
                if JobStatus(str(current["status"])).terminal:
                    yield frame("end", {})
                    return
                current = {}
                while not current:
                    if time.monotonic() >= deadline:
                        return
                    try:
                        current = await asyncio.wait_for(watcher.events.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield KEEPALIVE

    return stream(changes())


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

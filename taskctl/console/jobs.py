"""The job pages: a search with cursor pages, and one job with its live status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from jobstore.model import JobSearch, JobStatus
from producers.tenancy import job_view
from taskctl.console.sessions import PATH
from taskctl.console.sse import KEEPALIVE, KEEPALIVE_S, STREAM_S, frame, stream
from taskctl.console.timeline import timeline
from taskctl.console.web import MAX_TEXT, Visit, redirect, when
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

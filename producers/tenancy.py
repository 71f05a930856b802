"""Whose jobs a caller sees: one tenant, and optionally only some job types (others answer as unknown ids do); and the public JSON view of a job every door shows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from jobstore.model import JobPage, JobRecord, JobSearch, JobStore
from topology import routing
from topology.errors import JobNotFoundError
from topology.limits import excerpt
from topology.names import DEFAULT_TENANT

MAX_SCANS = 10  # store pages read per listing when job-type patterns filter it


@dataclass(frozen=True, slots=True)
class Viewer:
    """A caller's window on the jobs: its tenant and, when limited, the job types it may touch."""

    tenant: str = DEFAULT_TENANT
    job_types: tuple[str, ...] | None = None  # topic patterns (``email.*``, ``github.#``)

    def may_touch(self, job_type: str) -> bool:
        """Return whether the caller may submit, see or cancel jobs of ``job_type``."""
        if self.job_types is None:
            return True
        return any(routing.matches(pattern, job_type) for pattern in self.job_types)

    def sees(self, tenant: str, job_type: str) -> bool:
        """Return whether a job of ``tenant`` and ``job_type`` is in this caller's window."""
        return tenant == self.tenant and self.may_touch(job_type)


async def get_visible(store: JobStore, viewer: Viewer, job_id: str) -> JobRecord:
    """Return the job, if ``viewer`` may see it (``JobNotFoundError`` otherwise)."""
    job = await store.get_job(job_id)
    if job is None or not viewer.sees(job.tenant, job.type):
        raise JobNotFoundError(f"no job has id {excerpt(job_id)}")
    return job


async def list_visible(store: JobStore, viewer: Viewer, search: JobSearch) -> JobPage:
    """Return one page of the jobs ``search`` keeps among the viewer's, newest first."""
    # Job-type patterns cannot be said in SQL, so a limited viewer's page is filtered here over
    # up to MAX_SCANS store pages: it may hold fewer than ``limit`` jobs, and more may follow.
    if search.type is not None and not viewer.may_touch(search.type):
        return JobPage([], None)
    search = replace(search, tenant=viewer.tenant)
    if viewer.job_types is None or search.type is not None:
        return await store.list_jobs(search)
    found: list[JobRecord] = []
    after, limit = search.cursor, search.limit
    for _ in range(MAX_SCANS):
        page = await store.list_jobs(replace(search, cursor=after))
        for job in page.jobs:
            if viewer.may_touch(job.type):
                found.append(job)
                if len(found) == limit:
                    more = job.id != page.jobs[-1].id or page.next_cursor is not None
                    return JobPage(found, job.id if more else None)
        after = page.next_cursor
        if after is None:
            return JobPage(found, None)
    return JobPage(found, after)


def iso(value: datetime | None) -> str | None:
    """Return an ISO 8601 time in UTC with a Z, as every view of a job shows it."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def job_view(job: JobRecord) -> dict[str, Any]:
    """Return what a client may see of a job (never internal lease or routing state)."""
    created = iso(job.created_at)
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status.value,
        "priority": job.priority.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "idempotency_key": job.idempotency_key,
        "correlation_id": job.correlation_id,
        "callback_url": job.callback_url,
        "created_at": created,
        # A job just submitted was created and updated at the same time: one text for both.
        "updated_at": created if job.updated_at is job.created_at else iso(job.updated_at),
        "not_before": iso(job.not_before),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "last_error": job.last_error,
        "result": job.result,
        "payload_ref": job.payload_ref,
        "tenant": job.tenant,
        "workflow_id": job.workflow_id,
    }


def page_view(page: JobPage) -> dict[str, Any]:
    """Return a page of a job listing as every door answers it: ``{jobs, next_cursor}``."""
    return {"jobs": [job_view(j) for j in page.jobs], "next_cursor": page.next_cursor}

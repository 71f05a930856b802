"""The public JSON view of a job, shared by the HTTP API, the Python clients and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobstore.model import JobPage, JobRecord


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

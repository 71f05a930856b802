"""Job status events on the events exchange: what they hold and how they are keyed."""

from __future__ import annotations

from typing import Any

import orjson

from jobstore.model import JobRecord
from producers.views import iso

EVENT_FIELDS = ("id", "type", "status", "attempts", "updated_at", "last_error", "result", "tenant")


def event_key(job: JobRecord) -> str:
    """Return the routing key of a job's status event: ``<job type>.<status>``.

    Type first, so a binding can follow one type (``email.welcome.*``) or one status
    (``#.succeeded``).
    """
    return f"{job.type}.{job.status.value}"


def event_body(job: JobRecord) -> bytes:
    """Return the JSON body of a job's status event (``EVENT_FIELDS`` of its view, built directly)."""
    return orjson.dumps(
        {
            "id": job.id,
            "type": job.type,
            "status": job.status.value,
            "attempts": job.attempts,
            "updated_at": iso(job.updated_at),
            "last_error": job.last_error,
            "result": job.result,
            "tenant": job.tenant,
        }
    )


def decode_event(body: bytes) -> dict[str, Any] | None:
    """Return an event's fields, or ``None`` when the body is not an event."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    return data

"""Job status events on the events exchange: what they hold and how they are keyed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import orjson

from jobstore.model import JobStatus
from producers.tenancy import iso


class Eventful(Protocol):
    """What a status event tells of a job: a ``JobRecord``, or a worker's note of a change."""

    @property
    def id(self) -> str: ...  # noqa: D102
    @property
    def type(self) -> str: ...  # noqa: D102
    @property
    def status(self) -> JobStatus: ...  # noqa: D102
    @property
    def attempts(self) -> int: ...  # noqa: D102
    @property
    def updated_at(self) -> datetime: ...  # noqa: D102
    @property
    def last_error(self) -> str | None: ...  # noqa: D102
    @property
    def result(self) -> Any: ...  # noqa: D102
    @property
    def tenant(self) -> str: ...  # noqa: D102


def event_key(job: Eventful) -> str:
    """Return ``<job type>.<status>``, the key of a job's status event (bind ``#.failed``)."""
    return f"{job.type}.{job.status.value}"


def event_body(job: Eventful) -> bytes:
    """Return the JSON body of a job's status event (fields of its view, built directly)."""
    return orjson.dumps(
        {
            "id": job.id,
            "type": job.type,
            "status": job.status.value,
            "attempts": job.attempts,
            "updated_at": _iso(job.updated_at),
            "last_error": job.last_error,
            "result": job.result,
            "tenant": job.tenant,
        }
    )


_last_iso: list[tuple[datetime, str | None]] = []


def _iso(when: datetime) -> str | None:
    """Return ``iso(when)``, remembering the last one: a worker's events of a window share it."""
    if _last_iso and _last_iso[0][0] is when:
        return _last_iso[0][1]
    text = iso(when)
    _last_iso[:] = [(when, text)]
    return text


def decode_event(body: bytes) -> dict[str, Any] | None:
    """Return an event's fields, or ``None`` when the body is not an event."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    return data

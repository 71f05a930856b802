"""Between ``taskq.v1`` messages and taskq's own: job requests in, jobs and their events out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from jobstore.model import JobRecord, JobStatus
from producers.grpc_api.v1 import jobs_pb2 as pb
from topology.errors import JobRejectedError
from topology.spec import Priority

# The .proto names each enum value after taskq's own (PRIORITY_LOW, STATUS_DEAD, ...).
PRIORITIES = {pb.Priority.Value(f"PRIORITY_{p.name}"): p for p in Priority}
PRIORITY_CODES = {priority: code for code, priority in PRIORITIES.items()}
STATUSES = {pb.Status.Value(f"STATUS_{s.name}"): s for s in JobStatus}
STATUS_CODES = {status: code for code, status in STATUSES.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def request_fields(message: pb.SubmitRequest) -> dict[str, Any]:
    """Return the fields of ``POST /jobs`` a ``SubmitRequest`` holds (unset ones left out); raise ``JobRejectedError`` if unusable."""
    fields: dict[str, Any] = {"type": message.type}
    if message.payload_json:
        try:
            fields["payload"] = orjson.loads(message.payload_json)
        except orjson.JSONDecodeError as exc:
            raise JobRejectedError(
                f"payload_json is not JSON (UTF-8, RFC 8259): {exc}", field="payload_json"
            ) from None
    if message.priority:
        priority = PRIORITIES.get(message.priority)
        if priority is None:
            raise JobRejectedError(f"unknown priority {message.priority}", field="priority")
        fields["priority"] = priority
    when = message.WhichOneof("when")
    if when == "delay_seconds":
        fields["delay"] = message.delay_seconds
    elif when == "run_at":
        fields["run_at"] = message.run_at.ToDatetime(UTC)
    if message.HasField("max_attempts"):
        fields["max_attempts"] = message.max_attempts
    for name in ("idempotency_key", "callback_url", "correlation_id"):
        value = getattr(message, name)
        if value:  # proto3 strings are never unset: empty means none
            fields[name] = value
    return fields


def job_message(job: JobRecord) -> pb.Job:
    """Return ``job`` as a ``taskq.v1.Job``."""
    message = pb.Job(
        id=job.id,
        type=job.type,
        status=STATUS_CODES[job.status],
        priority=PRIORITY_CODES[job.priority],
        attempts=job.attempts,
        idempotency_key=job.idempotency_key or "",
        correlation_id=job.correlation_id or "",
        callback_url=job.callback_url or "",
        created_at=_stamp(job.created_at),
        updated_at=_stamp(job.updated_at),
        last_error=job.last_error or "",
        result_json=b"" if job.result is None else orjson.dumps(job.result),
        tenant=job.tenant,
    )
    if job.max_attempts is not None:
        message.max_attempts = job.max_attempts
    for name in ("not_before", "started_at", "finished_at"):
        when = getattr(job, name)
        if when is not None:
            getattr(message, name).CopyFrom(_stamp(when))
    if job.payload_ref is not None:
        message.payload_ref.CopyFrom(pb.PayloadRef(**job.payload_ref))
    return message


def view_message(view: dict[str, Any]) -> pb.Job:
    """Return a job's stored view (the JSON answer replayed for an idempotency key) as a ``taskq.v1.Job``."""
    times = ("created_at", "updated_at", "not_before", "started_at", "finished_at")
    fields: dict[str, Any] = {n: view[n] for n in JobRecord.__dataclass_fields__ if n in view}
    fields |= {name: _time(view.get(name)) for name in times}
    fields |= {"status": JobStatus(view["status"]), "priority": Priority(view["priority"])}
    return job_message(JobRecord(**fields))


def event_message(event: dict[str, Any]) -> pb.JobEvent:
    """Return a status event (of the events exchange, or a job's current state) as a ``taskq.v1.JobEvent``."""
    result = event.get("result")
    message = pb.JobEvent(
        id=str(event.get("id", "")),
        type=str(event.get("type", "")),
        status=STATUS_CODES.get(JobStatus(event["status"]), pb.STATUS_UNSPECIFIED),
        attempts=int(event.get("attempts") or 0),
        last_error=event.get("last_error") or "",
        result_json=b"" if result is None else orjson.dumps(result),
        tenant=str(event.get("tenant", "")),
    )
    updated = _time(event.get("updated_at"))
    if updated is not None:
        message.updated_at.CopyFrom(_stamp(updated))
    return message


def _stamp(when: datetime) -> Timestamp:
    # Built from the time since the epoch directly: Timestamp.FromDatetime costs several times more.
    since = when - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None

"""What a stream source's entry becomes: the job its declared mapping makes, or why it makes none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from redis.typing import EncodableT, FieldT

from producers.submit import JobRequest
from topology.errors import JobRejectedError
from topology.limits import excerpt
from topology.reserved import stream_producer
from topology.spec import StreamSourceSpec

Fields = Mapping[bytes, bytes]


def entry_request(
    name: str, spec: StreamSourceSpec, entry_id: str, fields: Fields
) -> JobRequest | JobRejectedError:
    """Return the job the entry ``entry_id`` of source ``name`` makes, or why it makes none.

    The entry id is the job's idempotency key, in the source's own key space: however often
    the entry is read again (a crash before its acknowledgement), it is one job.
    """
    text: dict[str, str] = {}
    for key, value in fields.items():
        try:
            text[key.decode()] = value.decode()
        except UnicodeDecodeError:
            return JobRejectedError(f"field {excerpt(key)} is not UTF-8 text")
    event = None
    if spec.event_field is not None:
        event = text.get(spec.event_field)
        if event is None:
            return JobRejectedError(f"no {spec.event_field!r} field (the event)")
    job_type = spec.job_type(event)
    if job_type is None:
        return JobRejectedError(f"event {excerpt(event)} does not make a job type of {spec.job!r}")
    payload: Any = text
    if spec.payload_field is not None:
        raw = text.get(spec.payload_field)
        if raw is None:
            return JobRejectedError(f"no {spec.payload_field!r} field (the payload)")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return JobRejectedError(f"field {spec.payload_field!r} is not JSON: {exc}")
    # Every field is known good but the type and the payload, which the submitter checks as it
    # does for every door (routing-key grammar, size, NUL characters): no schema pass needed.
    return JobRequest(
        type=job_type,
        payload=payload,
        priority=spec.priority,
        idempotency_key=entry_id,
        tenant=spec.tenant,
        source=stream_producer(name),
    )


def dead_letter_fields(
    stream: str, group: str, entry_id: str, fields: Fields, reason: str
) -> dict[FieldT, EncodableT]:
    """Return the fields of the dead-letter entry of an entry that made no job: where it was, why, what it held."""
    held = {
        key.decode("utf-8", "backslashreplace"): value.decode("utf-8", "backslashreplace")
        for key, value in fields.items()
    }
    return {
        "stream": stream,
        "group": group,
        "entry_id": entry_id,
        "reason": reason,
        "fields": orjson.dumps(held).decode(),
    }

"""What a stream source's entry becomes: the job its declared mapping makes, or why it makes none."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
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
    """Return the job the entry ``entry_id`` of source ``name`` makes (its id the entry's own), or why it makes none."""
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
        tenant=spec.tenant,
        source=stream_producer(name),
        job_id=entry_job_id(name, spec.stream, entry_id),
    )


def entry_job_id(name: str, stream: str, entry_id: str) -> str:
    """Return the id of the job the entry ``entry_id`` of ``stream`` makes for source ``name``: a UUIDv7."""
    # Its time is the entry's millisecond and its 12-bit counter the entry's sequence number
    # (RFC 9562 6.2, method 1), so ids sort as the entries do; its 62 random bits hash the
    # source, the stream and the entry id, so no two entries share one.
    ms, _, seq = entry_id.partition("-")
    digest = hashlib.sha256(f"{name}\n{stream}\n{entry_id}".encode()).digest()
    rand_b = int.from_bytes(digest[:8]) & (2**62 - 1)
    value = (int(ms) & (2**48 - 1)) << 80 | 0x7 << 76 | min(int(seq or 0), 0xFFF) << 64
    return str(uuid.UUID(int=value | 0x2 << 62 | rand_b))


def text(value: Any) -> str:
    """Return a Redis reply's bytes or string as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def unread(redis: aioredis.Redis, spec: StreamSourceSpec, group: Mapping[str, Any]) -> int:
    """Return the entries of ``spec``'s stream its ``group`` (an ``XINFO GROUPS`` reply) has not delivered yet."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    # Redis cannot tell the lag after entries were deleted inside the unread range: count
    # them, up to what the largest scaling decision needs.
    most = spec.scale.max * spec.scale.backlog_per_worker
    after = "(" + text(group.get("last-delivered-id"))
    return len(await redis.xrange(spec.stream, min=after, max="+", count=most) or ())


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

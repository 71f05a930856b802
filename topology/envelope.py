"""The versioned job envelope, its JSON encoding and its mapping to AMQP properties."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from topology import names
from topology.errors import ContractError
from topology.limits import MAX_ATTEMPTS, MAX_URL_CHARS, JobType, ShortString, Tenant, UtcTime
from topology.spec import Priority

ENVELOPE_VERSION: Final = 1
CONTENT_TYPE = "application/json"
PERSISTENT = 2


class PayloadRef(BaseModel):
    """Where a claim-checked payload is stored, and how to check it was not altered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]
    content_type: str = CONTENT_TYPE


class Envelope(BaseModel):
    """One job on the wire: identity, type, payload (or its reference) and delivery state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = ENVELOPE_VERSION
    id: ShortString
    type: JobType
    payload: JsonValue = None
    payload_ref: PayloadRef | None = None
    payload_enc: Annotated[str, Field(min_length=1)] | None = (
        None  # a sealed payload (topology.sealing)
    )
    priority: Priority = Priority.MEDIUM
    attempt: Annotated[int, Field(ge=1)] = 1
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] | None = None
    idempotency_key: ShortString | None = None
    created_at: UtcTime
    not_before: UtcTime | None = None
    correlation_id: ShortString | None = None
    tenant: Tenant = names.DEFAULT_TENANT  # who submitted it: bounds who may see or replay it

    @model_validator(mode="after")
    def _one_payload(self) -> Self:
        carried = (
            self.payload is not None,
            self.payload_ref is not None,
            self.payload_enc is not None,
        )
        if sum(carried) > 1:
            raise ValueError("an envelope carries one of payload, payload_ref and payload_enc")
        return self

    @classmethod
    def new(cls, job_type: str, payload: JsonValue = None, **fields: Any) -> Envelope:
        """Return a fresh envelope with a new time-ordered id and ``created_at`` = now (ContractError if invalid)."""
        fields.setdefault("id", new_job_id())
        fields.setdefault("created_at", datetime.now(UTC))
        try:
            return cls(type=job_type, payload=payload, **fields)
        except ValidationError as exc:
            raise ContractError(_describe(exc)) from exc

    def encode(self) -> bytes:
        """Return the envelope as compact JSON bytes."""
        # Straight from the validated fields: orjson writes enums, datetimes and JSON values
        # itself, which is several times cheaper than model_dump() on the publish hot path.
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        return orjson.dumps(fields, default=_dump_model, option=orjson.OPT_UTC_Z)

    def properties(self) -> AmqpProperties:
        """Return the AMQP properties and headers this envelope is published with."""
        # The body carries everything; headers hold only what the broker or a quick look
        # needs without parsing it. Routing headers (lanes, delay tiers) come from the Route.
        headers: dict[str, str | int] = {names.ATTEMPT_HEADER: self.attempt}
        return AmqpProperties(
            message_id=self.id,
            type=self.type,
            priority=self.priority.level,
            timestamp=self.created_at,
            correlation_id=self.correlation_id,
            headers=headers,
        )


@dataclass(frozen=True, slots=True)
class AmqpProperties:
    """Client-neutral AMQP properties, turned into aio-pika or pika ones by the publishers."""

    message_id: str
    type: str
    priority: int
    timestamp: datetime
    correlation_id: str | None
    headers: dict[str, str | int]
    content_type: str = CONTENT_TYPE
    delivery_mode: int = PERSISTENT


def _dump_model(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(body: bytes) -> Envelope:
    """Return the envelope held in ``body``; raise ContractError (and nothing else) when it holds none."""
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ContractError(f"message body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ContractError(f"message body is JSON {type(data).__name__}, not an envelope object")
    version = data.get("v")
    if version != ENVELOPE_VERSION:
        raise ContractError(
            f"envelope version {version!r} is not supported (this worker reads v{ENVELOPE_VERSION})"
        )
    try:
        return Envelope.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        detail = _describe(exc) if isinstance(exc, ValidationError) else "nested too deeply"
        raise ContractError(f"invalid envelope: {detail}") from exc


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'envelope'}: {e['msg']}" for e in exc.errors()
    )


_RANDOM = bytearray()
_last_counter = 0


def new_job_id() -> str:
    """Return a UUIDv7 string (RFC 9562): unique, and in creation order within this process."""
    # The 48-bit time and 74 random bits form one counter that only grows (RFC 9562 6.2), so
    # ids made in the same millisecond stay ordered. The OS CSPRNG is read 4 KiB at a time
    # (one syscall per 409 ids).
    global _RANDOM, _last_counter
    if len(_RANDOM) < 10:
        _RANDOM = bytearray(os.urandom(4090))
    chunk, _RANDOM = _RANDOM[:10], _RANDOM[10:]
    ms = time.time_ns() // 1_000_000
    counter = (ms & (2**48 - 1)) << 74 | (int.from_bytes(chunk) >> 6)
    if counter <= _last_counter:
        counter = _last_counter + 1
    _last_counter = counter
    ms, rand = counter >> 74, counter & (2**74 - 1)
    value = ms << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0x2 << 62 | (rand & (2**62 - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

"""The fields a job request may carry, validated the same way for HTTP and Python clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from topology.spec import Priority

SERVER_OWNED = frozenset(
    {
        "id",
        "status",
        "attempts",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "result",
        "last_error",
        "payload_ref",
        "not_before",
        "tenant",
    }
)
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("run_at needs a time zone offset (RFC 3339), e.g. 2026-01-01T09:00:00Z")
    return value


class JobSubmission(BaseModel):
    """One job to run: its type, payload and how to run it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[
        str, Field(min_length=1, max_length=255, description="A job type the topology routes.")
    ]
    payload: JsonValue = Field(default=None, description="Any JSON value; handed to the handler.")
    priority: Priority = Priority.MEDIUM
    delay: (
        Annotated[float, Field(ge=0, strict=True, description="Seconds to wait before running.")]
        | None
    ) = None
    run_at: (
        Annotated[datetime, AfterValidator(_aware), Field(description="RFC 3339 time to run at.")]
        | None
    ) = None
    max_attempts: Annotated[int, Field(ge=1, le=1000, strict=True)] | None = None
    idempotency_key: IdempotencyKey | None = None
    callback_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            owned = sorted(SERVER_OWNED & data.keys())
            if owned:
                raise ValueError(f"{', '.join(owned)}: set by the server, not by clients")
        return data

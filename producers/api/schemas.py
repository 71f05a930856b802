"""Request and response bodies of the HTTP job API (they are the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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


class BatchSubmission(BaseModel):
    """Several jobs published together, with confirms awaited together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: Annotated[list[JobSubmission], Field(min_length=1)]


class JobOut(BaseModel):
    """A job as clients see it."""

    id: str
    type: str
    status: Literal[
        "scheduled", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled"
    ]
    priority: Priority
    attempts: int
    max_attempts: int | None
    idempotency_key: str | None
    correlation_id: str | None
    callback_url: str | None
    created_at: str
    updated_at: str
    not_before: str | None
    started_at: str | None
    finished_at: str | None
    last_error: str | None
    result: JsonValue
    payload_ref: dict[str, Any] | None


class BatchItem(BaseModel):
    """The outcome of one job of a batch: the job, or the problem that stopped it."""

    status: int
    job: JobOut | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    """Per-job results of a batch, in request order."""

    accepted: int
    rejected: int
    results: list[BatchItem]


class JobList(BaseModel):
    """One page of jobs, newest first, and the cursor of the next page."""

    jobs: list[JobOut]
    next_cursor: str | None


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong and, for bad input, which fields."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None

"""The fields a job request may carry, validated the same way for HTTP and Python clients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from jobstore.model import JobRecord
from producers.submit import JobRequest
from topology.errors import JobRejectedError
from topology.limits import Attempts, CallbackUrl, Delay, IdempotencyKey, UtcTime
from topology.spec import Priority


class JobSubmission(BaseModel):
    """One job to run: its type, payload and how to run it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Type and correlation id are checked in full by the submitter (routing-key grammar,
    # bytes of UTF-8), so a batch answers each of its jobs on its own.
    type: Annotated[
        str, Field(min_length=1, max_length=255, description="A job type the topology routes.")
    ]
    payload: JsonValue = Field(default=None, description="Any JSON value; handed to the handler.")
    priority: Priority = Priority.MEDIUM
    delay: Annotated[Delay, Field(description="Seconds to wait before running.")] | None = None
    run_at: Annotated[UtcTime, Field(description="RFC 3339 time to run at.")] | None = None
    max_attempts: Attempts | None = None
    idempotency_key: IdempotencyKey | None = None
    callback_url: CallbackUrl | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            owned = sorted(SERVER_OWNED & data.keys())
            if owned:
                raise ValueError(f"{', '.join(owned)}: set by the server, not by clients")
        return data


# A client sending a field the server sets on each job is told so.
SERVER_OWNED = frozenset(JobRecord.__dataclass_fields__) - frozenset(JobSubmission.model_fields)


def checked_request(
    source: Mapping[str, Any] | JobRequest, tenant: str, *, door: str = "client"
) -> JobRequest | JobRejectedError:
    """Return the request once it passes the HTTP API's schema (every door accepts the same jobs), or why not.

    ``source`` holds the fields of ``POST /jobs`` (``None`` counts as unset), or is a request
    built in code; the job belongs to ``tenant`` and came in by ``door``.
    """
    try:
        if isinstance(source, JobRequest):  # built in code: read from its attributes
            body = JobSubmission.model_validate(source, from_attributes=True)
        else:
            body = JobSubmission.model_validate({k: v for k, v in source.items() if v is not None})
    except ValidationError as exc:
        return _rejected(exc)
    return JobRequest(**dict(body), tenant=tenant, source=door)


def _rejected(exc: ValidationError) -> JobRejectedError:
    errors = exc.errors()
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in errors)
    field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
    rejected = JobRejectedError(f"invalid job: {detail}", field=field)
    rejected.__cause__ = exc  # raised later, outside the except block: keep the chain
    return rejected

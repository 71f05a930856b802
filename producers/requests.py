"""The fields a job request may carry, validated the same way for HTTP and Python clients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from jobstore.model import JobRecord
from producers.submit import JobRequest
from topology.errors import JobRejectedError
from topology.limits import Attempts, CallbackUrl, Delay, IdempotencyKey, UtcTime
from topology.spec import Priority

MAX_WORKFLOW_STEPS = 10_000
"""The most steps (a chord's callback included) one workflow may have."""


class StepSubmission(BaseModel):
    """A job's type, payload, priority and attempts: a workflow's step, and the core of every job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Type and correlation id are checked in full by the submitter (routing-key grammar,
    # bytes of UTF-8), so a batch answers each of its jobs on its own.
    type: Annotated[
        str, Field(min_length=1, max_length=255, description="A job type the topology routes.")
    ]
    payload: JsonValue = Field(default=None, description="Any JSON value; handed to the handler.")
    priority: Priority = Priority.MEDIUM
    max_attempts: Attempts | None = None


class JobSubmission(StepSubmission):
    """One job to run: its type, payload and how to run it."""

    delay: Annotated[Delay, Field(description="Seconds to wait before running.")] | None = None
    run_at: Annotated[UtcTime, Field(description="RFC 3339 time to run at.")] | None = None
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


class WorkflowSubmission(BaseModel):
    """A chain (one step after another), a group (all at once) or a chord (a group, then a callback)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["chain", "group", "chord"]
    steps: Annotated[
        list[StepSubmission],
        Field(
            min_length=1,
            max_length=MAX_WORKFLOW_STEPS - 1,
            description="A chain's steps in order, or a group's or chord's members.",
        ),
    ]
    callback: StepSubmission | None = Field(
        default=None, description="A chord's callback: runs once, after every member ended."
    )
    on_failure: Literal["fail", "continue"] = Field(
        default="fail",
        description="fail: a step that dies fails the workflow and cancels the steps not "
        "started; continue: the next step (or the callback) runs all the same.",
    )
    idempotency_key: IdempotencyKey | None = None
    correlation_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="after")
    def _callback_for_chords(self) -> Self:
        if (self.kind == "chord") != (self.callback is not None):
            raise ValueError("a chord needs a callback, and only a chord has one")
        return self

    def all_steps(self) -> list[StepSubmission]:
        """Return every step in its position's order: the members, then a chord's callback."""
        return [*self.steps, *([self.callback] if self.callback is not None else [])]


def checked_request(
    source: Mapping[str, Any] | JobRequest, tenant: str, *, door: str = "client"
) -> JobRequest | JobRejectedError:
    """Return the request once it passes the HTTP API's schema (every door accepts the same jobs), or why not."""
    try:
        if isinstance(source, JobRequest):  # built in code: read from its attributes
            body = JobSubmission.model_validate(source, from_attributes=True)
        else:  # the fields of ``POST /jobs``, where ``None`` counts as unset
            body = JobSubmission.model_validate({k: v for k, v in source.items() if v is not None})
    except ValidationError as exc:
        errors = exc.errors()
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in errors)
        field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
        rejected = JobRejectedError(f"invalid job: {detail}", field=field)
        rejected.__cause__ = exc  # raised later, outside the except block: keep the chain
        return rejected
    # Its fields, as dict(body) gives them without the failed ``keys`` lookup it tries first.
    return JobRequest(**body.__dict__, tenant=tenant, source=door)

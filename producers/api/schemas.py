"""Request and response bodies of the HTTP job API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from producers.requests import JobSubmission
from topology.spec import Priority


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
    tenant: str
    workflow_id: str | None


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


class StepOut(BaseModel):
    """One step of a workflow: its place, whether its end was counted, and its job."""

    position: int
    role: Literal["step", "member", "callback"]
    counted: Literal["pending", "succeeded", "dead", "cancelled"]
    job_id: str
    job: JobOut | None  # None once the retention sweep deleted the job


class WorkflowSummary(BaseModel):
    """A workflow without its steps, as a listing shows it."""

    id: str
    kind: Literal["chain", "group", "chord"]
    status: Literal["running", "succeeded", "failed", "cancelled"]
    on_failure: Literal["fail", "continue"]
    steps_total: int
    pending: int
    failed: int
    error: str | None
    idempotency_key: str | None
    correlation_id: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    tenant: str


class WorkflowOut(WorkflowSummary):
    """A workflow with every step and its job."""

    steps: list[StepOut]
    replayed: bool = False


class WorkflowList(BaseModel):
    """One page of workflows, newest first, and the cursor of the next page."""

    workflows: list[WorkflowSummary]
    next_cursor: str | None


class ScheduleOut(BaseModel):
    """A schedule of the topology: its rule, its job, whether paused, its next and last runs."""

    name: str
    job: str
    rule: str
    cron: str | None
    every_s: float | None
    timezone: str
    misfire: Literal["once", "all", "skip"]
    priority: Priority
    tenant: str
    paused: bool
    paused_at: str | None
    next_run: str | None
    last_run: str | None
    last_job_id: str | None


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong and, for bad input, which fields."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None

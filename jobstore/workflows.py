"""What the job store keeps of workflows (chains, groups, chords of jobs) and the ``WorkflowStore`` port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jobstore.model import ClaimState, JobRecord, NewJob


class WorkflowKind(StrEnum):
    """How a workflow's steps follow each other."""

    CHAIN = "chain"  # one after another, each given the result of the one before
    GROUP = "group"  # all at once
    CHORD = "chord"  # a group, then a callback given every member's result


class WorkflowStatus(StrEnum):
    """Where a workflow is in its life."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a step died (under on_failure fail), or the last step or callback did
    CANCELLED = "cancelled"


class OnFailure(StrEnum):
    """What a step that dies does to its workflow."""

    FAIL = "fail"  # the workflow fails with the step's error; its pending steps are cancelled
    CONTINUE = "continue"  # the workflow goes on: the next step, or the callback, runs all the same


class StepRole(StrEnum):
    """What a step is to its workflow."""

    STEP = "step"  # a step of a chain
    MEMBER = "member"  # a member of a group or a chord
    CALLBACK = "callback"  # a chord's callback


class StepStatus(StrEnum):
    """Whether a step's end was counted, and how it ended (its job's first final status)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """One workflow as the store keeps it."""

    id: str
    kind: WorkflowKind
    status: WorkflowStatus
    on_failure: OnFailure
    tenant: str
    steps: int  # all of them, a chord's callback included
    pending: int  # steps (a chord's members) not final yet; a callback is not counted
    failed: int  # steps that died
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: str | None = None  # why it failed
    idempotency_key: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step: its place in its workflow, its job, and whether its end was counted."""

    workflow_id: str
    position: int  # 0-based; a chord's callback comes after its members
    role: StepRole
    job_id: str
    status: StepStatus = StepStatus.PENDING


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow to insert with its steps and their jobs (those to publish first carry a confirm deadline)."""

    workflow: WorkflowRecord
    steps: Sequence[StepRecord]
    jobs: Sequence[NewJob]
    request_hash: str = ""  # what a replay of its idempotency key must match


@dataclass(frozen=True, slots=True)
class WorkflowCreated:
    """What inserting a workflow found: it is new, or its key names one already (the same request or not)."""

    state: ClaimState  # NEW, DONE (the same request: that workflow) or MISMATCH
    workflow_id: str


@dataclass(frozen=True, slots=True)
class StepView:
    """A step with its job (``None`` once the retention sweep deleted it)."""

    step: StepRecord
    job: JobRecord | None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How an earlier step ended, as a later one receives it."""

    job_id: str
    status: StepStatus
    result: Any = None  # as stored (sealed when results are)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StepInputs:
    """What a step is given: the previous step of its chain, or every member of its chord."""

    workflow_id: str
    kind: WorkflowKind
    role: StepRole
    outcomes: Sequence[StepOutcome]


@dataclass(frozen=True, slots=True)
class StepEnd:
    """A step's job reaching a final status, as a run window records it."""

    job_id: str
    workflow_id: str
    status: StepStatus  # succeeded, dead or cancelled
    error: str | None = None


class WorkflowStore(Protocol):
    """Workflows and their steps; each method is one transaction."""

    async def create_workflow(self, new: NewWorkflow) -> WorkflowCreated:
        """Insert the workflow, its steps and their jobs, unless its idempotency key names one already."""

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepView]] | None:
        """Return the workflow and its steps in order (``None``: no such workflow)."""

    async def list_workflows(
        self, tenant: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[WorkflowRecord], str | None]:
        """Return ``tenant``'s workflows newest first, ``limit`` a page, and the next page's cursor."""

    async def cancel_workflow(self, workflow_id: str, at: datetime) -> WorkflowRecord | None:
        """Cancel a running workflow and every step not started (scheduled, queued, retrying); the workflow as it is after."""

    async def fail_unpublished(self, job_id: str, error: str, at: datetime) -> JobRecord | None:
        """Mark a job the broker refused for good failed (if not started) and count it as its workflow step's end."""

    async def step_inputs(self, job_id: str) -> StepInputs | None:
        """Return what the step ``job_id`` is given (``None``: not a step, or one given nothing)."""

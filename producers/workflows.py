"""Workflows of jobs: ``chain``, ``group`` and ``chord`` built in Python, and the service behind them and ``POST /workflows``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypedDict, Unpack

from pydantic import JsonValue

from jobstore.model import ClaimState, JobStatus, JobStore, NewJob
from jobstore.sealed_jobs import opened
from jobstore.workflows import (
    NewWorkflow,
    OnFailure,
    StepRecord,
    StepRole,
    StepView,
    WorkflowKind,
    WorkflowRecord,
    WorkflowStatus,
)
from producers.requests import StepSubmission, WorkflowSubmission
from producers.submit import JobRequest, Submitter
from producers.tenancy import Viewer, iso, job_view
from topology.envelope import new_job_id
from topology.errors import IdempotencyMismatchError, JobNotFoundError, JobStateError
from topology.limits import excerpt
from topology.sealing import Sealer
from topology.spec import Priority

Policy = Literal["fail", "continue"]


def step(
    job_type: str,
    payload: JsonValue = None,
    *,
    priority: Priority | str = Priority.MEDIUM,
    max_attempts: int | None = None,
) -> StepSubmission:
    """Return one step: a job of ``job_type`` to run when its turn comes (Celery's ``task.s()``)."""
    return StepSubmission(
        type=job_type, payload=payload, priority=Priority(priority), max_attempts=max_attempts
    )


class FlowOptions(TypedDict, total=False):
    """How a workflow runs: the optional fields of ``POST /workflows`` (default: fail, no key)."""

    on_failure: Policy
    idempotency_key: str | None
    correlation_id: str | None


def chain(*steps: StepSubmission, **options: Unpack[FlowOptions]) -> WorkflowSubmission:
    """Return a chain: each step runs once the one before ended, given its result (``ctx.previous``)."""
    return WorkflowSubmission(kind="chain", steps=list(steps), **options)


def group(*steps: StepSubmission, **options: Unpack[FlowOptions]) -> WorkflowSubmission:
    """Return a group: every step runs at once."""
    return WorkflowSubmission(kind="group", steps=list(steps), **options)


def chord(
    members: WorkflowSubmission | Iterable[StepSubmission],
    callback: StepSubmission,
    *,
    on_failure: Policy | None = None,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
) -> WorkflowSubmission:
    """Return a chord: the members (a ``group(...)``, whose options carry over, or steps) run at once, then the callback, given all their results (``ctx.results``)."""
    base = members if isinstance(members, WorkflowSubmission) else group(*members)
    return WorkflowSubmission(
        kind="chord",
        steps=base.steps,
        callback=callback,
        on_failure=on_failure or base.on_failure,
        idempotency_key=idempotency_key or base.idempotency_key,
        correlation_id=correlation_id or base.correlation_id,
    )


@dataclass(frozen=True, slots=True)
class WorkflowAnswer:
    """A workflow with its steps (their jobs opened), as every door shows it."""

    workflow: WorkflowRecord
    steps: list[StepView]
    replayed: bool = False  # its idempotency key named it already: this is that workflow


async def submit_workflow(
    submitter: Submitter, body: WorkflowSubmission, *, tenant: str, source: str = "client"
) -> WorkflowAnswer:
    """Store the workflow with every step's job through the submitter's rules, publish its first steps, and return it."""
    # The steps after the first (a chain's) wait, stored as scheduled, until a worker's run
    # window releases them. First steps not all confirmed raise, the workflow stored: the
    # repair sweep publishes them (a retry with the same key finds it).
    now = submitter.clock()
    kind = WorkflowKind(body.kind)
    flow_id = new_job_id()
    items: list[NewJob] = []
    steps: list[StepRecord] = []
    for position, given in enumerate(body.all_steps()):
        request = JobRequest(
            type=given.type,
            payload=given.payload,
            priority=given.priority,
            max_attempts=given.max_attempts,
            correlation_id=body.correlation_id or flow_id,
            source=source,
            tenant=tenant,
        )
        job = await submitter.prepare_job(request, now)
        if kind is WorkflowKind.CHAIN:
            role = StepRole.STEP
        else:  # a group's members, then a chord's callback
            role = StepRole.CALLBACK if position == len(body.steps) else StepRole.MEMBER
        first = role is StepRole.MEMBER or (kind is WorkflowKind.CHAIN and position == 0)
        status = JobStatus.QUEUED if first else JobStatus.SCHEDULED
        job = replace(job, workflow_id=flow_id, status=status)
        items.append(NewJob(job, confirm_within=submitter.settings.repair_after if first else None))
        steps.append(StepRecord(flow_id, position, role, job.id))
    flow = WorkflowRecord(
        id=flow_id,
        kind=kind,
        status=WorkflowStatus.RUNNING,
        on_failure=OnFailure(body.on_failure),
        tenant=tenant,
        steps=len(steps),
        pending=len(body.steps),
        failed=0,
        created_at=now,
        updated_at=now,
        idempotency_key=body.idempotency_key,
        correlation_id=body.correlation_id,
    )
    store, sealer = submitter.store, submitter.sealer
    # What makes a replay of its key the same request: its body and tenant.
    identity = body.model_dump_json(exclude={"idempotency_key"}) + "\n" + tenant
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    created = await store.create_workflow(NewWorkflow(flow, steps, items, fingerprint))
    if created.state is not ClaimState.NEW:
        await submitter.forget_blobs([item.job for item in items])
        if created.state is ClaimState.MISMATCH:
            raise IdempotencyMismatchError(
                "this idempotency key was already used for a different workflow; use a new key",
                field="idempotency_key",
            )
        found = await read_workflow(store, sealer, created.workflow_id, Viewer(tenant))
        return replace(found, replayed=True)
    first_wave = [item.job for item in items if item.confirm_within is not None]
    errors = await submitter.publish_stored(first_wave)
    failure = next((error for error in errors if error is not None), None)
    if failure is not None:
        raise failure
    return await read_workflow(store, sealer, flow_id, Viewer(tenant))


async def read_workflow(
    store: JobStore, sealer: Sealer, workflow_id: str, viewer: Viewer
) -> WorkflowAnswer:
    """Return the workflow and its steps (results opened), if ``viewer`` may see it (``JobNotFoundError`` otherwise)."""
    found = await store.get_workflow(workflow_id)
    # The viewer sees it when it is its tenant's, and every step's type is in its window.
    if found is None or not (
        found[0].tenant == viewer.tenant
        and all(view.job is None or viewer.may_touch(view.job.type) for view in found[1])
    ):
        raise JobNotFoundError(f"no workflow has id {excerpt(workflow_id)}")
    flow, steps = found
    views = [
        StepView(view.step, None if view.job is None else opened(view.job, sealer))
        for view in steps
    ]
    return WorkflowAnswer(flow, views)


async def cancel_workflow(
    store: JobStore, sealer: Sealer, workflow_id: str, viewer: Viewer, now: datetime
) -> WorkflowAnswer:
    """Cancel a running workflow the viewer sees (``JobStateError`` once it ended), and every step not started; the workflow after."""
    current = await read_workflow(store, sealer, workflow_id, viewer)
    if current.workflow.status is not WorkflowStatus.RUNNING:
        raise JobStateError(
            f"workflow {workflow_id} is {current.workflow.status.value}; only a running "
            "workflow can be cancelled"
        )
    await store.cancel_workflow(workflow_id, now)
    return await read_workflow(store, sealer, workflow_id, viewer)


def workflow_view(answer: WorkflowAnswer) -> dict[str, Any]:
    """Return what a client may see of a workflow: its status, counts and every step's job."""
    return {**flow_summary(answer.workflow), "steps": [_step_view(s) for s in answer.steps]}


def flow_summary(flow: WorkflowRecord) -> dict[str, Any]:
    """Return a workflow without its steps, as a listing shows it."""
    return {
        "id": flow.id,
        "kind": flow.kind.value,
        "status": flow.status.value,
        "on_failure": flow.on_failure.value,
        "steps_total": flow.steps,
        "pending": flow.pending,
        "failed": flow.failed,
        "error": flow.error,
        "idempotency_key": flow.idempotency_key,
        "correlation_id": flow.correlation_id,
        "created_at": iso(flow.created_at),
        "updated_at": iso(flow.updated_at),
        "finished_at": iso(flow.finished_at),
        "tenant": flow.tenant,
    }


def _step_view(view: StepView) -> dict[str, Any]:
    step = view.step
    return {
        "position": step.position,
        "role": step.role.value,
        "counted": step.status.value,
        "job": None if view.job is None else job_view(view.job),
        "job_id": step.job_id,
    }

"""Workflows and schedules for ``InMemoryJobStore``: stored, read, cancelled and paused as the SQL stores do.

The SQL stores count a step's end in a worker's run window; this twin does not (the workflow
tests run on SQLite and PostgreSQL), so a workflow here stays as it was submitted or cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from jobstore.model import ClaimState, JobRecord, JobStatus, ScheduleState
from jobstore.workflows import (
    NewWorkflow,
    StepInputs,
    StepRecord,
    StepStatus,
    StepView,
    WorkflowCreated,
    WorkflowRecord,
    WorkflowStatus,
)

_NOT_STARTED = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RETRYING})


class InMemoryFlows:
    """The ``WorkflowStore`` and ``ScheduleStore`` parts of the in-memory store."""

    jobs: dict[str, Any]

    def __init__(self) -> None:
        self.workflows: dict[str, tuple[WorkflowRecord, str]] = {}  # id -> (record, hash)
        self.steps: dict[str, list[StepRecord]] = {}
        self.schedules: dict[str, ScheduleState] = {}

    async def create_workflow(self, new: NewWorkflow) -> WorkflowCreated:
        flow = new.workflow
        for held, request_hash in self.workflows.values():
            if flow.idempotency_key and (held.tenant, held.idempotency_key) == (
                flow.tenant,
                flow.idempotency_key,
            ):
                same = request_hash == new.request_hash
                return WorkflowCreated(ClaimState.DONE if same else ClaimState.MISMATCH, held.id)
        await self.create_jobs(new.jobs)  # type: ignore[attr-defined]
        self.workflows[flow.id] = (flow, new.request_hash)
        self.steps[flow.id] = list(new.steps)
        return WorkflowCreated(ClaimState.NEW, flow.id)

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepView]] | None:
        if workflow_id not in self.workflows:
            return None
        views = [StepView(s, self.jobs.get(s.job_id)) for s in self.steps[workflow_id]]
        return self.workflows[workflow_id][0], views

    async def list_workflows(
        self, tenant: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[WorkflowRecord], str | None]:
        flows = sorted(
            (
                f
                for f, _ in self.workflows.values()
                if f.tenant == tenant and (cursor is None or f.id < cursor)
            ),
            key=lambda f: f.id,
            reverse=True,
        )
        return flows[:limit], flows[limit - 1].id if len(flows) > limit else None

    async def cancel_workflow(self, workflow_id: str, at: datetime) -> WorkflowRecord | None:
        if workflow_id not in self.workflows:
            return None
        flow, request_hash = self.workflows[workflow_id]
        if flow.status is WorkflowStatus.RUNNING:
            steps = self.steps[workflow_id]
            for index, step in enumerate(steps):
                job = self.jobs.get(step.job_id)
                if (
                    step.status is StepStatus.PENDING
                    and job is not None
                    and job.status in _NOT_STARTED
                ):
                    self.jobs[step.job_id] = replace(
                        job, status=JobStatus.CANCELLED, updated_at=at, finished_at=at
                    )
                    steps[index] = replace(step, status=StepStatus.CANCELLED)
            pending = sum(
                s.status is StepStatus.PENDING and s.role.value != "callback" for s in steps
            )
            flow = replace(
                flow,
                status=WorkflowStatus.CANCELLED,
                pending=pending,
                updated_at=at,
                finished_at=at,
            )
            self.workflows[workflow_id] = (flow, request_hash)
        return flow

    async def step_inputs(self, job_id: str) -> StepInputs | None:
        return None

    async def fail_unpublished(self, job_id: str, error: str, at: datetime) -> JobRecord | None:
        # As the SQL stores do but for the workflow, whose steps' ends this twin does not count.
        job = self.jobs.get(job_id)
        if job is None or job.status not in (JobStatus.SCHEDULED, JobStatus.QUEUED):
            return None
        self.jobs[job_id] = replace(
            job, status=JobStatus.FAILED, last_error=error, updated_at=at, finished_at=at
        )
        return self.jobs[job_id]

    async def schedule_states(self, names: Sequence[str], at: datetime) -> dict[str, ScheduleState]:
        for name in names:
            self.schedules.setdefault(name, ScheduleState(name, at, at))
        return {name: self.schedules[name] for name in names}

    async def record_fired(self, name: str, due: datetime, job_id: str, at: datetime) -> None:
        state = self.schedules[name]
        if state.last_due is None or state.last_due < due:
            self.schedules[name] = replace(state, last_due=due, last_job_id=job_id, updated_at=at)

    async def pause_schedule(self, name: str, at: datetime) -> ScheduleState:
        state = self.schedules.setdefault(name, ScheduleState(name, at, at))
        self.schedules[name] = replace(state, paused_at=state.paused_at or at, updated_at=at)
        return self.schedules[name]

    async def resume_schedule(self, name: str, at: datetime) -> ScheduleState:
        state = self.schedules.setdefault(name, ScheduleState(name, at, at))
        since = state.since if state.paused_at is None else at
        self.schedules[name] = replace(state, since=since, paused_at=None, updated_at=at)
        return self.schedules[name]

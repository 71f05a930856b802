"""The workflow SQL both stores share: creating one, counting its steps' ends, cancelling it, reading it."""

# A step's end is counted in the run window that records its job's end, under its workflow's
# row lock: never twice, never lost, and exactly one end sees a chord's last member finish.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from jobstore.model import ClaimState, JobRecord, JobStatus, KeptFor, RunEnd, RunJob, Swept
from jobstore.shared_sql import COLUMNS, INSERT_JOB, Query, SharedSql, Talk, many, marks
from jobstore.workflows import (
    NewWorkflow,
    OnFailure,
    StepEnd,
    StepInputs,
    StepOutcome,
    StepRecord,
    StepRole,
    StepStatus,
    StepView,
    WorkflowCreated,
    WorkflowKind,
    WorkflowRecord,
    WorkflowStatus,
)

RELEASE_GRACE_S = 5.0
"""Seconds a released step waits for its worker's publish before the repair sweep publishes it."""

_FLOW = (
    *("id", "kind", "status", "on_failure", "tenant", "steps", "pending", "failed"),
    *("created_at", "updated_at", "finished_at", "error", "idempotency_key", "correlation_id"),
)
_SELECT_FLOW = f"SELECT {', '.join(_FLOW)} FROM workflows"
_INSERT_FLOW = (
    f"INSERT INTO workflows ({', '.join(_FLOW)}, request_hash)"
    f" VALUES ({marks(len(_FLOW) + 1)})"
    " ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING id"
)
_KEYED = "SELECT id, request_hash FROM workflows WHERE tenant = $1 AND idempotency_key = $2"
_INSERT_STEP = (
    "INSERT INTO workflow_steps (workflow_id, position, role, job_id, status)"
    " VALUES ($1, $2, $3, $4, $5)"
)
_UNCONFIRMED = "INSERT INTO unconfirmed (job_id, publish_by) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_WRITE_FLOW = (
    "UPDATE workflows SET status = $2, pending = $3, failed = $4, error = $5, updated_at = $6,"
    " finished_at = CASE WHEN $7 THEN $6 ELSE finished_at END WHERE id = $1"
)
# A waiting step (its job stored scheduled, never published) becomes due.
_RELEASE = (
    "UPDATE jobs SET status = 'queued', updated_at = $3 WHERE id = (SELECT job_id FROM"
    " workflow_steps WHERE workflow_id = $1 AND position = $2) AND status = 'scheduled'"
    " RETURNING id"
)
_STEP_JOBS = "SELECT s.position, s.role, s.job_id, s.status, {jobs} FROM workflow_steps s LEFT JOIN jobs j ON j.id = s.job_id"
_OUTCOMES = (
    "SELECT s.job_id, s.status, j.result, j.last_error FROM workflow_steps s"
    " LEFT JOIN jobs j ON j.id = s.job_id WHERE s.workflow_id = $1 AND {which} ORDER BY s.position"
)
# Finished workflows whose every job the retention sweep deleted go with the last of them.
_EXPIRE_FLOWS = (
    "DELETE FROM workflows WHERE id IN (SELECT id FROM workflows w WHERE finished_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = w.id) LIMIT $1)"
)
_UNSTARTED = (JobStatus.SCHEDULED, JobStatus.QUEUED)  # what a job the broker never took can be
_STEP_STATUS = {
    JobStatus.SUCCEEDED: StepStatus.SUCCEEDED,
    JobStatus.DEAD: StepStatus.DEAD,
    JobStatus.FAILED: StepStatus.DEAD,
    JobStatus.CANCELLED: StepStatus.CANCELLED,
}


@dataclass(slots=True)
class _Flow:
    """A workflow's row as a conversation reads and changes it."""

    id: str
    kind: WorkflowKind
    status: WorkflowStatus
    on_failure: OnFailure
    steps: int
    pending: int
    failed: int
    error: str | None
    finished: bool = False  # it ended in this conversation, which stamps the time

    def ended(self, position: int, role: StepRole, end: StepEnd) -> tuple[int | None, bool]:
        """Count ``end``; return the position of the step it releases (if any) and whether to cancel the rest."""
        self.pending -= role is not StepRole.CALLBACK  # a callback is not counted pending
        died = end.status is not StepStatus.SUCCEEDED
        self.failed += died
        if self.status is not WorkflowStatus.RUNNING:
            return None, False  # failed or cancelled already: counted, nothing follows
        last = role is StepRole.CALLBACK or (
            self.kind is WorkflowKind.CHAIN and position == self.steps - 1
        )
        if died and (self.on_failure is OnFailure.FAIL or last):
            reason = end.error or "no error recorded"
            self._finish(
                WorkflowStatus.FAILED, f"step {position} (job {end.job_id}) died: {reason}"
            )
            return None, True
        if self.kind is WorkflowKind.CHAIN:
            if not last:
                return position + 1, False
        elif role is not StepRole.CALLBACK and self.pending > 0:
            return None, False
        elif self.kind is WorkflowKind.CHORD and role is not StepRole.CALLBACK:
            return self.steps - 1, False  # every member is final: the callback's turn
        self._finish(WorkflowStatus.SUCCEEDED, None)
        return None, False

    def _finish(self, status: WorkflowStatus, error: str | None) -> None:
        self.status, self.error = status, error
        self.finished = True


def step_ends(ends: Sequence[RunEnd], found: Sequence[RunJob | None]) -> list[StepEnd]:
    """Return the window's ends that finished a workflow step (``found``: the job each end found)."""
    return [
        StepEnd(job.id, job.workflow_id, _STEP_STATUS[end.status], end.error)
        for end, job in zip(ends, found, strict=True)
        if job is not None
        and job.workflow_id is not None
        and end.status is not None
        and end.status in _STEP_STATUS
    ]


class WorkflowSql(SharedSql):
    """Workflows over a store's conversations (``_talk``), ``_fetch`` and times."""

    # What PostgreSQL adds to the reads a conversation changes; SQLite's write lock holds all.
    _locking = ""  # the workflows a conversation changes: " FOR UPDATE"
    _skip_locked = ""  # steps' jobs to cancel, but not those a run window holds now

    async def create_workflow(self, new: NewWorkflow) -> WorkflowCreated:
        """Insert the workflow, its steps and their jobs, unless its idempotency key names one already."""
        return await self._talk(self.creating(new))

    async def cancel_workflow(self, workflow_id: str, at: datetime) -> WorkflowRecord | None:
        """Cancel a running workflow and every step not started; the workflow as it is after."""
        return await self._talk(self.cancelling(workflow_id, at))

    async def fail_unpublished(self, job_id: str, error: str, at: datetime) -> JobRecord | None:
        """Mark a job the broker refused for good failed (if not started) and count it as its workflow step's end."""
        return await self._talk(self._failing(job_id, error, at))

    def _failing(self, job_id: str, error: str, at: datetime) -> Talk[JobRecord | None]:
        fields = {"last_error": error, "updated_at": at, "finished_at": at}
        rows = yield self._transition(job_id, JobStatus.FAILED, _UNSTARTED, fields)
        job = next((self._job(row) for row in rows), None)
        if job is not None and job.workflow_id is not None:
            # The step will never run: its workflow goes on (or fails) as for a dead step, and
            # a step this releases is published by the repair sweep once its grace is over.
            yield from self.advancing(
                [StepEnd(job.id, job.workflow_id, StepStatus.DEAD, error)], at
            )
        return job

    def creating(self, new: NewWorkflow) -> Talk[WorkflowCreated]:
        """Insert ``new`` (the conversation of ``create_workflow``)."""
        flow = new.workflow
        if flow.idempotency_key is not None:
            held = yield Query(_KEYED, (flow.tenant, flow.idempotency_key))
            if held:
                return _replayed(held[0], new.request_hash)
        values = [self._value_in(name, getattr(flow, name)) for name in _FLOW]
        inserted = yield Query(_INSERT_FLOW, (*values, new.request_hash))
        if not inserted:  # a concurrent request with the same key committed first
            held = yield Query(_KEYED, (flow.tenant, flow.idempotency_key))
            return _replayed(held[0], new.request_hash)
        yield many(INSERT_JOB, [self._row(item.job) for item in new.jobs])
        now = datetime.now(UTC)
        deadlines = [
            (item.job.id, self._time_in(now + timedelta(seconds=item.confirm_within)))
            for item in new.jobs
            if item.confirm_within is not None
        ]
        yield many(_UNCONFIRMED, deadlines)  # run by neither store when there are none
        steps = [
            (s.workflow_id, s.position, s.role.value, s.job_id, s.status.value) for s in new.steps
        ]
        yield many(_INSERT_STEP, steps)
        return WorkflowCreated(ClaimState.NEW, flow.id)

    def advancing(self, ends: Sequence[StepEnd], at: datetime) -> Talk[dict[str, tuple[str, ...]]]:
        """Count the steps' ends, releasing what follows; return the released job ids by the ended job."""
        if not ends:
            return {}
        ids = [end.job_id for end in ends]
        rows = yield Query(
            "SELECT job_id, workflow_id, position, role FROM workflow_steps"
            f" WHERE status = 'pending' AND job_id IN ({marks(len(ids))})",
            ids,
        )
        steps = {job_id: (flow, position, StepRole(role)) for job_id, flow, position, role in rows}
        counted = [end for end in ends if end.job_id in steps]
        if not counted:
            return {}
        flows = yield from self._locked(sorted({flow for flow, _, _ in steps.values()}))
        yield many(
            "UPDATE workflow_steps SET status = $2 WHERE job_id = $1",
            [(end.job_id, end.status.value) for end in counted],
        )
        stamp = self._time_in(at)
        released: dict[str, tuple[str, ...]] = {}
        for end in counted:
            flow_id, position, role = steps[end.job_id]
            flow = flows[flow_id]
            following, cancel = flow.ended(position, role, end)
            if following is not None:
                job = yield Query(_RELEASE, (flow_id, following, stamp))
                if job:
                    due = self._time_in(at + timedelta(seconds=RELEASE_GRACE_S))
                    yield Query(_UNCONFIRMED, (job[0][0], due))
                    released[end.job_id] = (job[0][0],)
            if cancel:
                flow.pending -= yield from self._cancel_rest(flow_id, stamp)
        yield from self._write_flows(list(flows.values()), stamp)
        return released

    def cancelling(self, workflow_id: str, at: datetime) -> Talk[WorkflowRecord | None]:
        """Cancel the workflow and its steps not started (the conversation of ``cancel_workflow``)."""
        flows = yield from self._locked([workflow_id])
        flow = flows.get(workflow_id)
        if flow is None:
            return None
        stamp = self._time_in(at)
        if flow.status is WorkflowStatus.RUNNING:
            flow.pending -= yield from self._cancel_rest(workflow_id, stamp)
            flow.status, flow.finished = WorkflowStatus.CANCELLED, True
            yield from self._write_flows([flow], stamp)
        [row] = yield Query(f"{_SELECT_FLOW} WHERE id = $1", (workflow_id,))
        return self._flow(row)

    def _locked(self, ids: Sequence[str]) -> Talk[dict[str, _Flow]]:
        """Read (on PostgreSQL: lock, in id order) the workflows ``ids`` for a conversation to change."""
        rows = yield Query(
            "SELECT id, kind, status, on_failure, steps, pending, failed, error FROM workflows"
            f" WHERE id IN ({marks(len(ids))}) ORDER BY id{self._locking}",
            ids,
        )
        return {
            flow_id: _Flow(
                flow_id, WorkflowKind(kind), WorkflowStatus(status), OnFailure(fail), *rest
            )
            for flow_id, kind, status, fail, *rest in rows
        }

    def _cancel_rest(self, workflow_id: str, stamp: Any) -> Talk[int]:
        """Cancel the workflow's steps not started; return how many of them were counted pending."""
        rows = yield Query(
            "UPDATE jobs SET status = 'cancelled', updated_at = $2, finished_at = $2"
            " WHERE id IN (SELECT j.id FROM jobs j JOIN workflow_steps s ON s.job_id = j.id"
            " WHERE s.workflow_id = $1 AND s.status = 'pending'"
            f" AND j.status IN ('scheduled', 'queued', 'retrying'){self._skip_locked})"
            " RETURNING id",
            (workflow_id, stamp),
        )
        ids = [row[0] for row in rows]
        if not ids:
            return 0
        roles = yield Query(
            f"UPDATE workflow_steps SET status = 'cancelled' WHERE job_id IN ({marks(len(ids))})"
            " RETURNING role",
            ids,
        )
        return sum(1 for (role,) in roles if role != StepRole.CALLBACK.value)

    def _write_flows(self, flows: Sequence[_Flow], stamp: Any) -> Talk[None]:
        """Write the workflows' counters, status and end."""
        yield many(
            _WRITE_FLOW,
            [
                (f.id, f.status.value, f.pending, f.failed, f.error, stamp, f.finished)
                for f in flows
            ],
        )

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepView]] | None:
        """Return the workflow and its steps in order (``None``: no such workflow)."""
        rows = await self._fetch(f"{_SELECT_FLOW} WHERE id = $1", workflow_id)
        if not rows:
            return None
        jobs = ", ".join(f"j.{name}" for name in COLUMNS)
        steps = await self._fetch(
            _STEP_JOBS.format(jobs=jobs) + " WHERE s.workflow_id = $1 ORDER BY s.position",
            workflow_id,
        )
        views = [
            StepView(
                StepRecord(workflow_id, position, StepRole(role), job_id, StepStatus(status)),
                None if job[0] is None else self._job(job),
            )
            for position, role, job_id, status, *job in steps
        ]
        return self._flow(rows[0]), views

    async def list_workflows(
        self, tenant: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[WorkflowRecord], str | None]:
        """Return ``tenant``'s workflows newest first, ``limit`` a page, and the next page's cursor."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        after, args = "", [tenant, limit + 1]
        if cursor is not None:
            after, args = " AND id < $3", [*args, cursor]
        rows = await self._fetch(
            f"{_SELECT_FLOW} WHERE tenant = $1{after} ORDER BY id DESC LIMIT $2", *args
        )
        flows = [self._flow(row) for row in rows[:limit]]
        return flows, flows[-1].id if len(rows) > limit else None

    async def step_inputs(self, job_id: str) -> StepInputs | None:
        """Return what the step ``job_id`` is given: its chain's previous step, or its chord's members."""
        rows = await self._fetch(
            "SELECT s.workflow_id, s.position, s.role, w.kind FROM workflow_steps s"
            " JOIN workflows w ON w.id = s.workflow_id WHERE s.job_id = $1",
            job_id,
        )
        if not rows:
            return None
        flow, position, role, kind = rows[0]
        args: list[Any] = [flow]
        if kind == WorkflowKind.CHAIN.value and position > 0:
            which, args = "s.position = $2", [flow, position - 1]
        elif role == StepRole.CALLBACK.value:
            which = "s.role = 'member'"
        else:
            return None
        found = await self._fetch(_OUTCOMES.format(which=which), *args)
        outcomes = [
            StepOutcome(
                step, StepStatus(status), None if result is None else orjson.loads(result), error
            )
            for step, status, result, error in found
        ]
        return StepInputs(flow, WorkflowKind(kind), StepRole(role), outcomes)

    async def sweep(self, kept_for: KeptFor, *, limit: int, ask: Sequence[str] = ()) -> Swept:
        """Delete finished jobs as ``SharedSql.sweep`` does, then the finished workflows left without jobs."""
        swept = await super().sweep(kept_for, limit=limit, ask=ask)
        await self._fetch(_EXPIRE_FLOWS, limit)
        return swept

    def _flow(self, row: Sequence[Any]) -> WorkflowRecord:
        values = self._decoded(_FLOW, row)
        values["kind"] = WorkflowKind(values["kind"])
        values["status"] = WorkflowStatus(values["status"])
        values["on_failure"] = OnFailure(values["on_failure"])
        return WorkflowRecord(**values)


def _replayed(held: Sequence[Any], request_hash: str) -> WorkflowCreated:
    workflow_id, held_hash = held
    same = held_hash == request_hash
    return WorkflowCreated(ClaimState.DONE if same else ClaimState.MISMATCH, workflow_id)

"""Workflows in the job store: a step's end counted in its run window, once; what it releases; cancellation."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from jobstore.model import ClaimState, JobRecord, JobStatus, JobStore, NewJob, RunEnd, RunStart
from jobstore.workflows import (
    NewWorkflow,
    OnFailure,
    StepRecord,
    StepRole,
    StepStatus,
    WorkflowKind,
    WorkflowRecord,
    WorkflowStatus,
)
from topology.envelope import new_job_id
from topology.spec import Priority

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def new_flow(
    kind: WorkflowKind, size: int, *, on_failure: OnFailure = OnFailure.FAIL, key: str | None = None
) -> NewWorkflow:
    """Return a workflow of ``size`` steps (a chord's callback last), its first wave queued."""
    flow_id = new_job_id()
    total = size + (kind is WorkflowKind.CHORD)
    jobs, steps = [], []
    for position in range(total):
        role = (
            StepRole.STEP
            if kind is WorkflowKind.CHAIN
            else StepRole.CALLBACK
            if position == size
            else StepRole.MEMBER
        )
        first = role is StepRole.MEMBER or position == 0
        record = JobRecord(
            id=new_job_id(),
            type=f"job.step{position}",
            status=JobStatus.QUEUED if first else JobStatus.SCHEDULED,
            priority=Priority.MEDIUM,
            created_at=NOW,
            updated_at=NOW,
            workflow_id=flow_id,
        )
        jobs.append(NewJob(record, confirm_within=30.0 if first else None))
        steps.append(StepRecord(flow_id, position, role, record.id))
    pending = size
    flow = WorkflowRecord(
        flow_id,
        kind,
        WorkflowStatus.RUNNING,
        on_failure,
        "default",
        total,
        pending,
        0,
        NOW,
        NOW,
        idempotency_key=key,
    )
    return NewWorkflow(flow, steps, jobs, request_hash="h")


async def run(
    store: JobStore, job_id: str, status: JobStatus, result: object = None, error: str | None = None
) -> tuple[str, ...]:
    """Start and end ``job_id``'s run as a worker does; return the jobs its end released."""
    _, (started,) = await store.run_window([], [RunStart(job_id, 1, 60, NOW)])
    [found], _ = await store.run_window(
        [RunEnd(job_id, started.deliveries, status, NOW, result, error)], []
    )
    assert found is not None
    return found.released


async def status_of(store: JobStore, job_id: str) -> JobStatus:
    job = await store.get_job(job_id)
    assert job is not None
    return job.status


async def test_a_chain_releases_each_step_when_the_one_before_succeeds(sql_store: JobStore) -> None:
    new = new_flow(WorkflowKind.CHAIN, 3)
    created = await sql_store.create_workflow(new)
    assert created.state is ClaimState.NEW
    ids = [s.job_id for s in new.steps]
    assert [await status_of(sql_store, i) for i in ids] == [
        JobStatus.QUEUED,
        JobStatus.SCHEDULED,
        JobStatus.SCHEDULED,
    ]
    assert await run(sql_store, ids[0], JobStatus.SUCCEEDED, {"n": 1}) == (ids[1],)
    assert await status_of(sql_store, ids[1]) is JobStatus.QUEUED
    inputs = await sql_store.step_inputs(ids[1])
    assert inputs is not None
    assert [(o.job_id, o.status, o.result) for o in inputs.outcomes] == [
        (ids[0], StepStatus.SUCCEEDED, {"n": 1})
    ]
    assert await sql_store.step_inputs(ids[0]) is None  # the first step is given nothing
    assert await run(sql_store, ids[1], JobStatus.SUCCEEDED, 2) == (ids[2],)
    assert await run(sql_store, ids[2], JobStatus.SUCCEEDED, 3) == ()
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    flow, steps = found
    assert (flow.status, flow.pending, flow.failed) == (WorkflowStatus.SUCCEEDED, 0, 0)
    assert flow.finished_at is not None
    assert [v.job.result for v in steps if v.job is not None] == [{"n": 1}, 2, 3]
    # The released steps were given a publish deadline: the repair sweep's, if no worker publishes.
    taken = await sql_store.take_unconfirmed(limit=10, lease_s=30)
    assert taken == []  # none overdue yet


async def test_a_dead_step_fails_the_chain_and_cancels_the_rest(sql_store: JobStore) -> None:
    new = new_flow(WorkflowKind.CHAIN, 3)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    assert await run(sql_store, ids[0], JobStatus.DEAD, error="Permanent: no") == ()
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    flow, steps = found
    assert flow.status is WorkflowStatus.FAILED
    assert flow.error == f"step 0 (job {ids[0]}) died: Permanent: no"
    assert [v.step.status for v in steps] == [
        StepStatus.DEAD,
        StepStatus.CANCELLED,
        StepStatus.CANCELLED,
    ]
    assert [await status_of(sql_store, i) for i in ids[1:]] == [JobStatus.CANCELLED] * 2


async def test_a_step_the_broker_refuses_for_good_fails_its_chain(sql_store: JobStore) -> None:
    # The repair sweep's end for a step it could not publish: counted like a dead step's.
    new = new_flow(WorkflowKind.CHAIN, 2)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    failed = await sql_store.fail_unpublished(ids[0], "never published: no route", NOW)
    assert failed is not None
    assert (failed.status, failed.last_error) == (JobStatus.FAILED, "never published: no route")
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    flow, steps = found
    assert flow.status is WorkflowStatus.FAILED
    assert [v.step.status for v in steps] == [StepStatus.DEAD, StepStatus.CANCELLED]
    # A job that started meanwhile is its worker's to end: nothing changes.
    assert await sql_store.fail_unpublished(ids[0], "again", NOW) is None


async def test_a_member_ending_after_its_group_failed_keeps_the_end_time(
    sql_store: JobStore,
) -> None:
    new = new_flow(WorkflowKind.GROUP, 2)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    _, started = await sql_store.run_window([], [RunStart(i, 1, 60, NOW) for i in ids])
    await sql_store.run_window([RunEnd(ids[0], started[0].deliveries, JobStatus.DEAD, NOW)], [])
    failed = await sql_store.get_workflow(new.workflow.id)
    assert failed is not None
    assert failed[0].finished_at is not None
    # The running member was not cancelled; its end is counted, the workflow's end time stays.
    await sql_store.run_window(
        [RunEnd(ids[1], started[1].deliveries, JobStatus.SUCCEEDED, NOW)], []
    )
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    assert (found[0].status, found[0].pending) == (WorkflowStatus.FAILED, 0)
    assert found[0].finished_at == failed[0].finished_at


async def test_a_chain_that_continues_gives_the_next_step_the_failure(sql_store: JobStore) -> None:
    new = new_flow(WorkflowKind.CHAIN, 2, on_failure=OnFailure.CONTINUE)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    assert await run(sql_store, ids[0], JobStatus.DEAD, error="boom") == (ids[1],)
    inputs = await sql_store.step_inputs(ids[1])
    assert inputs is not None
    assert [(o.status, o.error) for o in inputs.outcomes] == [(StepStatus.DEAD, "boom")]
    await run(sql_store, ids[1], JobStatus.SUCCEEDED)
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    assert (found[0].status, found[0].failed) == (WorkflowStatus.SUCCEEDED, 1)


async def test_a_chord_releases_its_callback_once_when_its_last_member_ends(
    sql_store: JobStore,
) -> None:
    new = new_flow(WorkflowKind.CHORD, 20, on_failure=OnFailure.CONTINUE)
    await sql_store.create_workflow(new)
    members, callback = [s.job_id for s in new.steps[:-1]], new.steps[-1].job_id

    async def end(index: int, job_id: str) -> tuple[str, ...]:
        if index % 5 == 0:
            return await run(sql_store, job_id, JobStatus.DEAD, error="died")
        return await run(sql_store, job_id, JobStatus.SUCCEEDED, index)

    # Ended concurrently (separate windows, as several workers would).
    released = await asyncio.gather(*(end(i, j) for i, j in enumerate(members)))
    assert sorted(r for r in released if r) == [(callback,)]
    # A redelivered end of a member finds it final: nothing is counted or released again.
    again = await sql_store.run_window([RunEnd(members[1], 1, JobStatus.SUCCEEDED, NOW, 1)], [])
    assert again == ([None], [])
    inputs = await sql_store.step_inputs(callback)
    assert inputs is not None
    assert [o.result for o in inputs.outcomes] == [None if i % 5 == 0 else i for i in range(20)]
    assert [o.error for o in inputs.outcomes][:2] == ["died", None]
    await run(sql_store, callback, JobStatus.SUCCEEDED, "merged")
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    assert (found[0].status, found[0].pending, found[0].failed) == (WorkflowStatus.SUCCEEDED, 0, 4)


async def test_a_dead_member_fails_the_chord_without_its_callback(sql_store: JobStore) -> None:
    new = new_flow(WorkflowKind.CHORD, 3)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    await run(sql_store, ids[0], JobStatus.SUCCEEDED)
    assert await run(sql_store, ids[1], JobStatus.DEAD, error="x") == ()
    # The third member had not started: cancelled with the callback; a worker acks it unrun.
    assert [await status_of(sql_store, i) for i in ids[2:]] == [JobStatus.CANCELLED] * 2
    found = await sql_store.get_workflow(new.workflow.id)
    assert found is not None
    assert (found[0].status, found[0].pending) == (WorkflowStatus.FAILED, 0)


async def test_cancelling_reaches_every_step_not_started(sql_store: JobStore) -> None:
    new = new_flow(WorkflowKind.GROUP, 4)
    await sql_store.create_workflow(new)
    ids = [s.job_id for s in new.steps]
    await sql_store.run_window([], [RunStart(ids[0], 1, 60, NOW)])  # running: not cancelled
    flow = await sql_store.cancel_workflow(new.workflow.id, NOW)
    assert flow is not None
    assert (flow.status, flow.pending) == (WorkflowStatus.CANCELLED, 1)
    assert [await status_of(sql_store, i) for i in ids] == [JobStatus.RUNNING] + [
        JobStatus.CANCELLED
    ] * 3
    # The running one ends later: counted, and nothing follows a cancelled workflow.
    [found], _ = await sql_store.run_window([RunEnd(ids[0], 1, JobStatus.SUCCEEDED, NOW)], [])
    assert found is not None
    assert found.released == ()
    again = await sql_store.get_workflow(new.workflow.id)
    assert again is not None
    assert (again[0].status, again[0].pending) == (WorkflowStatus.CANCELLED, 0)
    assert await sql_store.cancel_workflow("no-such-workflow", NOW) is None


async def test_an_idempotency_key_names_one_workflow(sql_store: JobStore) -> None:
    first = new_flow(WorkflowKind.GROUP, 2, key="k1")
    assert (await sql_store.create_workflow(first)).state is ClaimState.NEW
    second = new_flow(WorkflowKind.GROUP, 2, key="k1")
    replay = await sql_store.create_workflow(second)
    assert (replay.state, replay.workflow_id) == (ClaimState.DONE, first.workflow.id)
    other = replace(new_flow(WorkflowKind.GROUP, 2, key="k1"), request_hash="different")
    assert (await sql_store.create_workflow(other)).state is ClaimState.MISMATCH
    assert await sql_store.get_job(second.steps[0].job_id) is None  # nothing of the replay stored
    flows, cursor = await sql_store.list_workflows("default")
    assert ([f.id for f in flows], cursor) == ([first.workflow.id], None)


@pytest.mark.parametrize("kind", list(WorkflowKind))
async def test_a_finished_workflow_goes_with_its_last_job(
    sql_store: JobStore, kind: WorkflowKind
) -> None:
    new = new_flow(kind, 1)
    await sql_store.create_workflow(new)
    for step in new.steps:
        await run(sql_store, step.job_id, JobStatus.SUCCEEDED)
    swept = await sql_store.sweep(lambda job_type, dead: 0.0, limit=100)
    assert swept.jobs == len(new.steps)
    assert await sql_store.get_workflow(new.workflow.id) is None

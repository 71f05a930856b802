"""Starting and finishing runs from the port's one-step calls, for stores without a batched form."""

from __future__ import annotations

from jobstore.model import (
    SETTLED,
    STARTABLE,
    ExecutionState,
    JobRecord,
    JobStatus,
    JobStore,
    RunFinish,
    RunStart,
    RunStarted,
    StartOutcome,
)


async def start_run(store: JobStore, item: RunStart) -> RunStarted:
    """Start one run as ``JobStore.start_runs`` describes, each step atomic on its own."""
    job = await store.get_job(item.job_id)
    if job is not None and job.status in SETTLED:
        return RunStarted(StartOutcome.SETTLED, job=job)
    claim = await store.claim_execution(item.key, item.job_id, lease_s=item.lease_s)
    if claim.state is ExecutionState.HELD:
        return RunStarted(StartOutcome.HELD, job=job)
    if claim.state is ExecutionState.DONE:
        done = await store.transition(
            item.job_id,
            JobStatus.SUCCEEDED,
            allowed_from=STARTABLE,
            result=claim.result,
            finished_at=item.started_at,  # when this worker learnt it: the done-mark's run died
            updated_at=item.started_at,
        )
        return RunStarted(StartOutcome.DONE, result=claim.result, job=done)
    deliveries = await store.count_delivery(item.job_id)
    running = await store.transition(
        item.job_id,
        JobStatus.RUNNING,
        allowed_from=STARTABLE,
        attempts=item.attempt,
        started_at=item.started_at,
        updated_at=item.started_at,
    )
    return RunStarted(StartOutcome.RUN, deliveries, job=running)


async def finish_run(store: JobStore, item: RunFinish) -> JobRecord | None:
    """Finish one run as ``JobStore.finish_runs`` describes: the key first, then the job."""
    await store.finish_execution(item.key, item.job_id, item.result, ttl_s=item.ttl_s)
    return await store.transition(
        item.job_id,
        JobStatus.SUCCEEDED,
        allowed_from=STARTABLE,
        result=item.result,
        finished_at=item.finished_at,
        updated_at=item.finished_at,
    )

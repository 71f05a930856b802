"""Batched run starts and finishes (the worker's two store calls per job) on every backend."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from jobstore.model import (
    SETTLED,
    ClaimState,
    JobStatus,
    JobStore,
    RunFinish,
    RunStart,
    StartOutcome,
)
from jobstore.sqlite import SqliteJobStore
from tests.producers.test_store import NOW, job
from topology.envelope import new_job_id
from topology.errors import StoreError

LATER = NOW + timedelta(seconds=3)


def start(job_id: str, key: str | None = None, attempt: int = 1) -> RunStart:
    return RunStart(job_id, key or job_id, attempt, 60.0, NOW)


def finish(job_id: str, result: object, key: str | None = None) -> RunFinish:
    return RunFinish(job_id, key or job_id, result, 3600.0, LATER)


async def test_a_start_claims_counts_and_marks_running(store: JobStore) -> None:
    record = job()
    await store.create_job(record)
    (started,) = await store.start_runs([start(record.id, attempt=2)])
    assert started.outcome is StartOutcome.RUN
    assert started.deliveries == 1
    assert started.job is not None
    assert (started.job.status, started.job.attempts, started.job.started_at) == (
        JobStatus.RUNNING,
        2,
        NOW,
    )
    assert await store.get_job(record.id) == started.job


async def test_a_second_start_of_a_held_key_is_held_even_within_one_batch(store: JobStore) -> None:
    first, second = job(), job()
    await store.create_job(first)
    await store.create_job(second)
    outcomes = await store.start_runs([start(first.id, "shared"), start(second.id, "shared")])
    assert [o.outcome for o in outcomes] == [StartOutcome.RUN, StartOutcome.HELD]
    (again,) = await store.start_runs([start(first.id, "shared")])
    assert again.outcome is StartOutcome.HELD
    second_job = await store.get_job(second.id)
    assert second_job is not None
    assert second_job.status is JobStatus.QUEUED


@pytest.mark.parametrize("status", sorted(SETTLED))
async def test_settled_jobs_are_left_alone(store: JobStore, status: JobStatus) -> None:
    settled = job(status=status)
    await store.create_job(settled)
    (started,) = await store.start_runs([start(settled.id)])
    assert started.outcome is StartOutcome.SETTLED
    found = await store.get_job(settled.id)
    assert found is not None
    assert found.status is status


def test_every_final_status_is_settled() -> None:
    assert SETTLED == {status for status in JobStatus if status.terminal} >= {JobStatus.FAILED}


async def test_a_finish_marks_the_key_done_and_the_job_succeeded(store: JobStore) -> None:
    record = job()
    await store.create_job(record)
    await store.start_runs([start(record.id)])
    (finished,) = await store.finish_runs([finish(record.id, {"sent": 1})])
    assert finished is not None
    assert (finished.status, finished.result, finished.finished_at) == (
        JobStatus.SUCCEEDED,
        {"sent": 1},
        LATER,
    )
    # A replayed copy of the job finds its effects done: succeeded again, not run.
    await store.transition(record.id, JobStatus.QUEUED, allowed_from=frozenset(JobStatus))
    (again,) = await store.start_runs([start(record.id)])
    assert again.outcome is StartOutcome.DONE
    assert again.result == {"sent": 1}
    assert again.job is not None
    assert again.job.status is JobStatus.SUCCEEDED
    assert again.job.finished_at is not None


async def test_a_finish_by_a_run_that_lost_its_claim_changes_nothing(store: JobStore) -> None:
    record = job()
    await store.create_job(record)
    await store.start_runs([start(record.id, "key")])
    stranger = new_job_id()
    assert await store.finish_runs([finish(stranger, "late", "key")]) == [None]
    (held,) = await store.start_runs([start(new_job_id(), "key")])
    assert held.outcome is StartOutcome.HELD


async def test_starts_for_unknown_jobs_still_claim(store: JobStore) -> None:
    # Jobs published around the API (no row) still get exactly-once effects by their key.
    ghost = new_job_id()
    (started,) = await store.start_runs([start(ghost)])
    assert (started.outcome, started.deliveries, started.job) == (StartOutcome.RUN, 0, None)
    assert await store.finish_runs([finish(ghost, 1)]) == [None]
    (again,) = await store.start_runs([start(ghost)])
    assert (again.outcome, again.result) == (StartOutcome.DONE, 1)


async def test_a_failing_unit_of_a_group_commit_is_undone_alone(tmp_path: Path) -> None:
    # Concurrent writes share one SQLite transaction; each sits in its own savepoint.
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    first, other = job(), job()
    outcomes = await asyncio.gather(
        store.create_job(first, claim=("k1", "h")),
        store.create_job(first, claim=("k2", "h")),  # the same id again: the insert fails
        store.create_job(other, claim=("k3", "h")),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["Claim", "StoreError", "Claim"]
    assert isinstance(outcomes[1], StoreError)
    assert await store.get_job(first.id) is not None
    assert await store.get_job(other.id) is not None
    # The failed unit's claim of k2 was rolled back with it: the key is free.
    claim = await store.create_job(job(), claim=("k2", "h"))
    assert claim.state is ClaimState.NEW
    await store.close()


@pytest.mark.parametrize("size", [1, 7, 40])
async def test_a_batch_answers_every_item_in_order(store: JobStore, size: int) -> None:
    records = [job() for _ in range(size)]
    for record in records:
        await store.create_job(record)
    started = await store.start_runs([start(r.id) for r in records])
    assert [s.job.id for s in started if s.job] == [r.id for r in records]
    finished = await store.finish_runs([finish(r.id, i) for i, r in enumerate(records)])
    assert [f.result for f in finished if f] == list(range(size))

"""A worker's run windows on every backend: ends and starts in one call, claims on the job's row."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from jobstore.model import (
    ClaimState,
    JobRecord,
    JobStatus,
    JobStore,
    NewJob,
    RunEnd,
    RunStart,
    StartOutcome,
)
from jobstore.sqlite import SqliteJobStore
from tests.helpers import create_job
from tests.producers.conftest import Backend
from tests.producers.test_store import NOW, job
from topology.envelope import Envelope, new_job_id
from topology.errors import StoreError

LATER = NOW + timedelta(seconds=3)


def start(job_id: str, attempt: int = 1, lease_s: float = 60.0) -> RunStart:
    return RunStart(job_id, attempt, lease_s, NOW)


def end(job_id: str, run: int, status: JobStatus | None, **fields: object) -> RunEnd:
    return RunEnd(job_id, run, status, LATER, **fields)  # type: ignore[arg-type]


async def test_a_start_claims_counts_and_marks_running(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, (started,) = await store.run_window([], [start(record.id, attempt=2)])
    assert started.outcome is StartOutcome.RUN
    assert started.deliveries == 1
    assert started.job is not None
    stored = await store.get_job(record.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.started_at) == (JobStatus.RUNNING, 2, NOW)
    assert (started.job.status, started.job.attempts) == (JobStatus.RUNNING, 2)


@pytest.mark.parametrize("status", sorted(s for s in JobStatus if s.terminal))
async def test_settled_jobs_are_left_alone(store: JobStore, status: JobStatus) -> None:
    settled = job(status=status)
    await create_job(store, settled)
    _, (started,) = await store.run_window([], [start(settled.id)])
    assert started.outcome is StartOutcome.SETTLED
    found = await store.get_job(settled.id)
    assert found is not None
    assert found.status is status


def test_a_failed_job_is_final() -> None:
    assert JobStatus.FAILED.terminal


async def test_a_claimed_job_is_held_even_within_one_window(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, outcomes = await store.run_window([], [start(record.id), start(record.id)])
    assert [o.outcome for o in outcomes] == [StartOutcome.RUN, StartOutcome.HELD]
    _, (again,) = await store.run_window([], [start(record.id)])
    assert again.outcome is StartOutcome.HELD


async def test_a_claim_whose_lease_ran_out_is_taken_over_and_counted(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    await store.run_window([], [start(record.id, lease_s=0.05)])
    await asyncio.sleep(0.1)  # its worker crashed: time itself is what is tested
    _, (again,) = await store.run_window([], [start(record.id)])
    assert (again.outcome, again.deliveries) == (StartOutcome.RUN, 2)
    # The run that lost its claim cannot end the job; the one that took it over can.
    (stale,), _ = await store.run_window([end(record.id, 1, JobStatus.SUCCEEDED, result=1)], [])
    assert stale is None
    (done,), _ = await store.run_window([end(record.id, 2, JobStatus.SUCCEEDED, result=2)], [])
    assert done is not None
    stored = await store.get_job(record.id)
    assert stored is not None
    assert stored.result == 2


async def test_ended_jobs_are_settled_and_never_start_again(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, (started,) = await store.run_window([], [start(record.id)])
    ending = end(record.id, started.deliveries, JobStatus.SUCCEEDED, result={"sent": ["ü"]})
    (finished,), (again,) = await store.run_window([ending], [start(record.id)])
    assert finished is not None
    assert finished.status is JobStatus.RUNNING  # as the end found it
    assert again.outcome is StartOutcome.SETTLED
    assert again.job is not None
    assert again.job.status is JobStatus.SUCCEEDED
    stored = await store.get_job(record.id)
    assert stored is not None
    assert (stored.status, stored.result, stored.finished_at) == (
        JobStatus.SUCCEEDED,
        {"sent": ["ü"]},
        LATER,
    )


async def test_a_retrying_end_frees_the_claim_for_the_next_attempt(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, (first,) = await store.run_window([], [start(record.id)])
    retry = end(record.id, first.deliveries, JobStatus.RETRYING, error="Boom: once")
    (retrying,), (second,) = await store.run_window([retry], [start(record.id, attempt=2)])
    assert retrying is not None
    stored = await store.get_job(record.id)
    assert stored is not None
    assert stored.last_error == "Boom: once"
    assert stored.finished_at is None
    assert (second.outcome, second.deliveries) == (StartOutcome.RUN, 2)


async def test_a_copy_of_an_attempt_already_made_is_settled_not_run(store: JobStore) -> None:
    # A job published twice (a publish repeated) whose first copy failed: the second copy
    # carries the attempt that failed, and must not run it again; the retry's message runs.
    record = job()
    await create_job(store, record)
    _, (first,) = await store.run_window([], [start(record.id)])
    retry = end(record.id, first.deliveries, JobStatus.RETRYING, error="Boom: once")
    _, (copy,) = await store.run_window([retry], [start(record.id, attempt=1)])
    assert copy.outcome is StartOutcome.SETTLED
    _, (second,) = await store.run_window([], [start(record.id, attempt=2, lease_s=0.05)])
    assert (second.outcome, second.deliveries) == (StartOutcome.RUN, 2)
    await asyncio.sleep(0.1)  # the second run's claim runs out: it crashed
    _, (late, redelivered) = await store.run_window(
        [], [start(record.id, attempt=1), start(record.id, attempt=2)]
    )
    assert (late.outcome, redelivered.outcome) == (StartOutcome.SETTLED, StartOutcome.RUN)
    assert redelivered.deliveries == 3
    stored = await store.get_job(record.id)
    assert stored is not None
    assert (stored.status, stored.attempts) == (JobStatus.RUNNING, 2)


async def test_a_release_keeps_the_status_and_frees_the_claim(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, (run,) = await store.run_window([], [start(record.id)])
    (released,), (again,) = await store.run_window(
        [end(record.id, run.deliveries, None, error="StoreError: refused")], [start(record.id)]
    )
    assert released is not None
    stored = await store.get_job(record.id)
    assert stored is not None
    assert stored.status is JobStatus.RUNNING
    assert (again.outcome, again.deliveries) == (StartOutcome.RUN, 2)


async def test_an_end_without_a_run_applies_only_while_nobody_holds_the_job(
    store: JobStore,
) -> None:
    free, held = job(), job()
    await create_job(store, free)
    await create_job(store, held)
    await store.run_window([], [start(held.id)])
    dead, not_dead = (
        await store.run_window(
            [end(free.id, 0, JobStatus.DEAD, error="no handler"), end(held.id, 0, JobStatus.DEAD)],
            [],
        )
    )[0]
    assert dead is not None
    stored = await store.get_job(free.id)
    assert stored is not None
    assert (stored.status, stored.last_error) == (JobStatus.DEAD, "no handler")
    assert not_dead is None


async def test_cancelled_jobs_are_settled(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    await store.transition(
        record.id, JobStatus.CANCELLED, allowed_from=frozenset({JobStatus.QUEUED})
    )
    _, (started,) = await store.run_window([], [start(record.id)])
    assert started.outcome is StartOutcome.SETTLED
    assert started.job is not None
    assert started.job.status is JobStatus.CANCELLED


async def test_starts_for_unknown_jobs_run_with_nothing_recorded(store: JobStore) -> None:
    ghost = new_job_id()
    _, (started,) = await store.run_window([], [start(ghost)])
    assert (started.outcome, started.deliveries, started.job) == (StartOutcome.RUN, 0, None)
    (ended,), _ = await store.run_window([end(ghost, 0, JobStatus.SUCCEEDED, result=1)], [])
    assert ended is None


async def test_a_value_the_store_refuses_fails_the_whole_window(store: JobStore) -> None:
    good, bad = job(), job()
    await create_job(store, good)
    await create_job(store, bad)
    _, runs = await store.run_window([], [start(good.id), start(bad.id)])
    with pytest.raises(StoreError):
        await store.run_window(
            [
                end(good.id, runs[0].deliveries, JobStatus.SUCCEEDED, result=1),
                end(bad.id, runs[1].deliveries, JobStatus.SUCCEEDED, result={"x": object()}),
            ],
            [],
        )
    stored = await store.get_job(good.id)
    assert stored is not None
    assert stored.status is JobStatus.RUNNING


async def test_deliveries_are_counted_once_for_every_process(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    runs = []
    for _ in range(3):
        _, (run,) = await store.run_window([], [start(record.id)])
        runs.append(run.deliveries)
        await store.run_window([end(record.id, run.deliveries, None)], [])
    assert runs == [1, 2, 3]


async def test_a_failing_unit_of_a_group_commit_is_undone_alone(tmp_path: Path) -> None:
    # Concurrent writes share one SQLite transaction; each sits in its own savepoint.
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    first, other = job(), job()
    outcomes = await asyncio.gather(
        create_job(store, first, claim=("k1", "h")),
        # A payload that is no JSON: its key is claimed, then its insert fails.
        create_job(store, job(payload={"x": object()}), claim=("k2", "h")),
        create_job(store, other, claim=("k3", "h")),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["Claim", "StoreError", "Claim"]
    assert isinstance(outcomes[1], StoreError)
    assert await store.get_job(first.id) is not None
    assert await store.get_job(other.id) is not None
    # The failed unit's claim of k2 was rolled back with it: the key is free.
    claim = await create_job(store, job(), claim=("k2", "h"))
    assert claim.state is ClaimState.NEW
    await store.close()


@pytest.mark.parametrize("size", [1, 7, 40])
async def test_a_window_answers_every_item_in_order(store: JobStore, size: int) -> None:
    records = [job() for _ in range(size)]
    for record in records:
        await create_job(store, record)
    _, started = await store.run_window([], [start(r.id) for r in records])
    assert [s.job.id for s in started if s.job] == [r.id for r in records]
    ends = [
        end(r.id, s.deliveries, JobStatus.SUCCEEDED, result=i)
        for i, (r, s) in enumerate(zip(records, started, strict=True))
    ]
    finished, _ = await store.run_window(ends, [])
    assert [f.id for f in finished if f] == [r.id for r in records]
    stored = [await store.get_job(r.id) for r in records]
    assert [s.result for s in stored if s] == list(range(size))


def message_of(record: JobRecord) -> Envelope:
    """Return the envelope a submitter publishes for ``record``."""
    shared = {
        name: getattr(record, name) for name in Envelope.model_fields if hasattr(record, name)
    }
    return Envelope(**shared | {"idempotency_key": record.idempotency_key or record.id})


def start_of(record: JobRecord, attempt: int = 1) -> RunStart:
    return RunStart(record.id, attempt, 60.0, NOW, message_of(record))


async def test_a_start_whose_job_has_no_row_yet_creates_it_from_the_message(
    store: JobStore,
) -> None:
    record = job(max_attempts=4, correlation_id="order-7", tenant="acme")
    _, (started,) = await store.run_window([], [start_of(record)])
    assert (started.outcome, started.deliveries) == (StartOutcome.RUN, 1)
    assert started.job is not None
    assert (started.job.status, started.job.tenant) == (JobStatus.RUNNING, "acme")
    stored = await store.get_job(record.id)
    assert stored == replace(
        record, status=JobStatus.RUNNING, attempts=1, started_at=NOW, updated_at=NOW
    )
    # Its run ends as any other: the row records it, and the job never starts again.
    ending = end(record.id, started.deliveries, JobStatus.SUCCEEDED, result="sent")
    (finished,), (again,) = await store.run_window([ending], [start_of(record)])
    assert finished is not None
    assert again.outcome is StartOutcome.SETTLED


async def test_an_end_without_a_run_whose_job_has_no_row_yet_creates_it_ended(
    store: JobStore,
) -> None:
    # A type no handler takes is dead-lettered at once: its end may overtake the job's row.
    record = job(tenant="acme")
    error = "no handler for job type"
    dead = end(record.id, 0, JobStatus.DEAD, error=error, envelope=message_of(record))
    (ended,), _ = await store.run_window([dead], [])
    assert ended is not None
    stored = await store.get_job(record.id)
    assert stored is not None
    assert (stored.status, stored.last_error, stored.tenant) == (JobStatus.DEAD, error, "acme")
    # The submitter's row, written behind its confirm, leaves the ended job as it is.
    await store.create_jobs([NewJob(record)])
    again = await store.get_job(record.id)
    assert again is not None
    assert again.status is JobStatus.DEAD


async def test_the_submitters_insert_after_the_worker_created_the_row_leaves_it_alone(
    store: JobStore,
) -> None:
    record = job()
    _, (started,) = await store.run_window([], [start_of(record)])
    await store.run_window([end(record.id, started.deliveries, JobStatus.SUCCEEDED)], [])
    # The submitter's insert commits late, with a publish deadline that is already over.
    [claim] = await store.create_jobs([NewJob(record, confirm_within=0)])
    assert claim.state is ClaimState.NEW
    stored = await store.get_job(record.id)
    assert stored is not None
    assert (stored.status, stored.attempts) == (JobStatus.SUCCEEDED, 1)
    # A finished job is not published again by the repair sweep.
    assert await store.take_unconfirmed(limit=10, lease_s=60) == []


async def test_a_keyed_job_whose_row_vanished_gets_its_key_back_from_the_message(
    store: JobStore,
) -> None:
    record = job(idempotency_key="order-9")
    await store.run_window([], [start_of(record)])
    stored = await store.get_job(record.id)
    assert stored is not None
    assert stored.idempotency_key == "order-9"


async def test_a_window_that_fails_creates_no_row(store: JobStore) -> None:
    running, fresh = job(), job()
    await create_job(store, running)
    _, (run,) = await store.run_window([], [start(running.id)])
    bad = end(running.id, run.deliveries, JobStatus.SUCCEEDED, result={"x": object()})
    with pytest.raises(StoreError):
        await store.run_window([bad], [start_of(fresh)])
    assert await store.get_job(fresh.id) is None


async def test_a_start_without_its_message_creates_no_row(store: JobStore) -> None:
    ghost = job()
    _, (started,) = await store.run_window([], [start(ghost.id)])
    assert (started.outcome, started.job) == (StartOutcome.RUN, None)
    assert await store.get_job(ghost.id) is None


async def test_a_worker_and_the_submitter_racing_on_one_job_both_succeed_once(
    backend: Backend,
) -> None:
    # Two stores are two processes: the worker's window and the submitter's insert commit in
    # either order, and neither fails, resets the row or counts the start twice.
    submitter, worker = backend.open(), backend.open()
    await submitter.migrate()
    for _ in range(20):
        records = [job() for _ in range(3)]
        claims, (_, started) = await asyncio.gather(
            submitter.create_jobs([NewJob(r, confirm_within=60) for r in records]),
            worker.run_window([], [start_of(r) for r in reversed(records)]),
        )
        assert [c.state for c in claims] == [ClaimState.NEW] * 3
        assert [(s.outcome, s.deliveries) for s in started] == [(StartOutcome.RUN, 1)] * 3
        for record in records:
            stored = await worker.get_job(record.id)
            assert stored is not None
            assert stored.status is JobStatus.RUNNING

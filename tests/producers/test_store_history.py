"""A job's history on every backend: events written with a run's end, replays, the trace id, breaker transitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from jobstore.model import (
    BREAKER_CHANGES_KEPT,
    BreakerRecord,
    JobEvent,
    JobEventKind,
    JobStatus,
    JobStore,
    RunEnd,
    RunStart,
)
from tests.helpers import create_job
from tests.producers.conftest import Backend
from tests.producers.test_store import NOW, job

LATER = NOW + timedelta(seconds=3)


def failure(job_id: str, attempt: int, kind: JobEventKind = JobEventKind.RETRIED) -> JobEvent:
    return JobEvent(
        job_id,
        LATER,
        kind,
        attempt,
        error="Boom: refused",
        took_ms=2500,
        delay_ms=1000 if kind is JobEventKind.RETRIED else None,
        tier="1s" if kind is JobEventKind.RETRIED else None,
        reason="exhausted" if kind is JobEventKind.DEAD else None,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )


async def test_a_failed_runs_event_lands_with_its_end_and_a_success_writes_none(
    backend: Backend, store: JobStore
) -> None:
    record = job()
    await create_job(store, record)
    _, (run,) = await store.run_window([], [RunStart(record.id, 1, 60.0, NOW)])
    step = failure(record.id, 1)
    retry = RunEnd(record.id, run.deliveries, JobStatus.RETRYING, LATER, error="Boom", event=step)
    _, (again,) = await store.run_window([retry], [RunStart(record.id, 2, 60.0, LATER)])
    done = RunEnd(record.id, again.deliveries, JobStatus.SUCCEEDED, LATER, result=1)
    await store.run_window([done], [])
    # Another process (the console) reads what the worker wrote.
    assert await backend.open().list_events(record.id) == [step]


async def test_an_end_that_does_not_apply_records_no_event(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    _, (run,) = await store.run_window([], [RunStart(record.id, 1, 60.0, NOW)])
    stale = RunEnd(
        record.id, run.deliveries + 1, JobStatus.DEAD, LATER, event=failure(record.id, 1)
    )
    (found,), _ = await store.run_window([stale], [])
    assert found is None
    assert await store.list_events(record.id) == []


async def test_events_come_oldest_first_up_to_the_limit_and_skip_unknown_jobs(
    store: JobStore,
) -> None:
    record = job(status=JobStatus.DEAD)
    await create_job(store, record)
    steps = [
        failure(record.id, 1),
        failure(record.id, 2, JobEventKind.DEAD),
        JobEvent(record.id, LATER, JobEventKind.REPLAYED, 2, reason="exhausted"),
    ]
    await store.record_events([*steps, failure("no-such-job", 1)])
    assert await store.list_events(record.id) == steps
    assert await store.list_events(record.id, limit=2) == steps[:2]
    assert await store.list_events("no-such-job") == []


async def test_a_swept_job_takes_its_events_with_it(store: JobStore) -> None:
    ended = NOW - timedelta(days=30)
    old = job(status=JobStatus.DEAD, updated_at=ended, finished_at=ended)
    await create_job(store, old)
    await store.record_events([failure(old.id, 1, JobEventKind.DEAD)])
    swept = await store.sweep(lambda job_type, dead: 3600.0, limit=10)
    assert swept.jobs == 1
    assert await store.list_events(old.id) == []
    await create_job(store, old)  # the same id again starts with no history
    assert await store.list_events(old.id) == []


async def test_the_trace_a_job_was_submitted_in_round_trips(store: JobStore) -> None:
    traced = job(trace_id="0af7651916cd43dd8448eb211c80319c")
    await create_job(store, traced)
    assert await store.get_job(traced.id) == traced
    listed = await store.list_jobs()
    assert [j.trace_id for j in listed.jobs] == ["0af7651916cd43dd8448eb211c80319c"]


def breaker(**changes: object) -> BreakerRecord:
    return replace(BreakerRecord("mail", "smtp", "host-a:101", "open", 5, NOW), **changes)  # type: ignore[arg-type]


async def test_every_breaker_transition_is_logged_newest_first_and_bounded(
    store: JobStore,
) -> None:
    assert await store.list_breaker_changes() == []
    opened = breaker()
    half = breaker(state="half_open", changed_at=NOW + timedelta(seconds=30))
    closed = breaker(state="closed", failures=0, changed_at=NOW + timedelta(seconds=31))
    for change in (opened, half, closed):
        await store.record_breaker(change)
    assert await store.list_breakers() == [closed]  # the latest state only
    assert await store.list_breaker_changes() == [closed, half, opened]
    assert await store.list_breaker_changes(limit=1) == [closed]
    for n in range(BREAKER_CHANGES_KEPT):
        await store.record_breaker(breaker(failures=n))
    kept = await store.list_breaker_changes(limit=BREAKER_CHANGES_KEPT + 10)
    assert len(kept) == BREAKER_CHANGES_KEPT
    assert kept[0].failures == BREAKER_CHANGES_KEPT - 1
    assert kept[-1].failures == 0


async def test_revive_moves_a_dead_lettered_job_back_with_its_counts_reset(store: JobStore) -> None:
    done = job()
    await create_job(store, done)
    _, (run,) = await store.run_window([], [RunStart(done.id, 1, 60.0, NOW)])
    await store.run_window([RunEnd(done.id, run.deliveries, JobStatus.SUCCEEDED, NOW)], [])
    assert not await store.revive(done.id, LATER)  # succeeded: a finished job stays finished
    record = job()
    await create_job(store, record)
    for attempt in (1, 2, 3):
        _, (run,) = await store.run_window([], [RunStart(record.id, attempt, 60.0, NOW)])
        status = JobStatus.DEAD if attempt == 3 else JobStatus.RETRYING
        await store.run_window([RunEnd(record.id, run.deliveries, status, NOW, error="x")], [])
    assert await store.revive(record.id, LATER)
    revived = await store.get_job(record.id)
    assert revived is not None
    assert (revived.status, revived.attempts, revived.finished_at, revived.updated_at) == (
        JobStatus.QUEUED,
        0,
        None,
        LATER,
    )
    _, (again,) = await store.run_window([], [RunStart(record.id, 1, 60.0, LATER)])
    assert again.deliveries == 1  # its starts are counted anew
    assert not await store.revive("no-such-job", LATER)

"""The job store contract: one set of test bodies run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from jobstore.model import (
    BreakerRecord,
    Claim,
    ClaimState,
    Confirmed,
    JobRecord,
    JobSearch,
    JobStatus,
    JobStore,
    NewJob,
    RunStart,
    open_store,
)
from jobstore.postgres import PostgresJobStore
from jobstore.shared_sql import load_migrations
from jobstore.sqlite import SqliteJobStore
from tests.conftest import scratch_database
from tests.helpers import create_job
from tests.producers.conftest import Backend
from topology.envelope import new_job_id
from topology.errors import SettingsError, StoreError, StoreUnavailableError
from topology.spec import Priority

CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "TASKQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 11, 27, 21, 6, 11, 831124, tzinfo=UTC)
QUEUED = frozenset({JobStatus.QUEUED})
NEW = ClaimState.NEW
LATEST = max(load_migrations("sqlite"))


def job(**changes: Any) -> JobRecord:
    base = JobRecord(
        id=new_job_id(),
        type="email",
        status=JobStatus.QUEUED,
        priority=Priority.MEDIUM,
        created_at=NOW,
        updated_at=NOW,
        payload={"to": "user@example.com"},
    )
    return replace(base, **changes)


async def test_migrate_is_idempotent_and_returns_the_version(backend: Backend) -> None:
    first = backend.open()
    assert await first.migrate() == LATEST
    assert await first.migrate() == LATEST
    assert await backend.open().migrate() == LATEST


async def test_migrations_agree_when_five_processes_run_them_at_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(5)]
    assert await asyncio.gather(*(s.migrate() for s in stores)) == [LATEST] * 5
    record = job()
    await create_job(stores[0], record)
    assert await stores[4].get_job(record.id) == record


async def test_every_field_round_trips_when_all_are_set(store: JobStore) -> None:
    record = job(
        status=JobStatus.RUNNING,
        priority=Priority.URGENT,
        updated_at=NOW + timedelta(microseconds=1),
        payload={
            "nested": {"list": [1, 2.5, True, False, None, "ü → 😀 漢字"], "empty": {}},
            "deep": [[{"a": []}]],
            "big": 2**53 + 1,
            "quote": 'say "hi"\n\tand\\leave',
        },
        payload_ref={"uri": "s3://b/k", "sha256": "ab" * 32, "size": 10, "content_type": "x/y"},
        attempts=3,
        max_attempts=8,
        idempotency_key="key-1",
        correlation_id="corr-1",
        callback_url="https://example.com/callback?x=1",
        not_before=NOW + timedelta(days=1),
        started_at=NOW + timedelta(seconds=1, microseconds=7),
        finished_at=datetime(2030, 1, 1, tzinfo=UTC),
        last_error="boom\nline two — ünïcode",
        result=["ok", {"n": 1.25}],
    )
    assert await create_job(store, record) == Claim(NEW, record.id)
    got = await store.get_job(record.id)
    assert got == record
    assert got is not None
    times = [got.created_at, got.updated_at, got.not_before, got.started_at, got.finished_at]
    assert all(t is not None and t.utcoffset() == timedelta(0) for t in times)


async def test_none_fields_and_non_utc_times_round_trip(store: JobStore) -> None:
    plus_two = datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    record = job(payload=None, created_at=plus_two, updated_at=plus_two)
    bare = job(payload="just a string", priority=Priority.LOW)
    await create_job(store, record)
    await create_job(store, bare)
    got = await store.get_job(record.id)
    assert got == record
    assert got is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert await store.get_job(bare.id) == bare
    assert await store.get_job(new_job_id()) is None


async def test_pages_cover_every_job_newest_first_when_listing_25_by_10(store: JobStore) -> None:
    ids = []
    for _ in range(25):
        record = job()
        ids.append(record.id)
        await create_job(store, record)
    seen, cursor, sizes = [], None, []
    while True:
        page = await store.list_jobs(JobSearch(limit=10, cursor=cursor))
        sizes.append(len(page.jobs))
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sizes == [10, 10, 5]
    assert seen == sorted(ids, reverse=True)  # UUIDv7 ids sort by creation time


async def test_listing_filters_by_status_and_type(store: JobStore) -> None:
    records = [
        job(type=kind, status=status)
        for kind in ("email", "sms")
        for status in (JobStatus.QUEUED, JobStatus.RUNNING)
        for _ in range(3)
    ]
    for record in records:
        await create_job(store, record)

    async def listed(**filters: Any) -> list[str]:
        ids, cursor = [], None
        while True:
            page = await store.list_jobs(JobSearch(limit=2, cursor=cursor, **filters))
            ids += [j.id for j in page.jobs]
            if (cursor := page.next_cursor) is None:
                return ids

    def expected(keep: Callable[[JobRecord], bool]) -> list[str]:
        return sorted((r.id for r in records if keep(r)), reverse=True)

    assert await listed(status=JobStatus.RUNNING) == expected(lambda r: r.status == "running")
    assert await listed(type="sms") == expected(lambda r: r.type == "sms")
    both = await listed(status=JobStatus.QUEUED, type="email")
    assert both == expected(lambda r: r.status == "queued" and r.type == "email")
    assert await listed(status=JobStatus.DEAD) == []


async def test_transition_sets_status_and_fields_when_allowed(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    later = NOW + timedelta(seconds=5)
    running = await store.transition(
        record.id, JobStatus.RUNNING, allowed_from=QUEUED, started_at=later, attempts=1
    )
    assert running == replace(record, status=JobStatus.RUNNING, started_at=later, attempts=1)
    done = await store.transition(
        record.id,
        JobStatus.SUCCEEDED,
        allowed_from=frozenset({JobStatus.RUNNING}),
        finished_at=later,
        updated_at=later,
        result={"sent": True, "ids": ["é"]},
        last_error=None,
    )
    assert done == replace(
        running,
        status=JobStatus.SUCCEEDED,
        finished_at=later,
        updated_at=later,
        result={"sent": True, "ids": ["é"]},
    )
    assert await store.get_job(record.id) == done


async def test_transition_changes_nothing_when_not_allowed(store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    running = frozenset({JobStatus.RUNNING})
    assert await store.transition(record.id, JobStatus.SUCCEEDED, allowed_from=running) is None
    assert await store.transition(record.id, JobStatus.RUNNING, allowed_from=frozenset()) is None
    assert await store.transition(new_job_id(), JobStatus.RUNNING, allowed_from=QUEUED) is None
    assert await store.get_job(record.id) == record


async def test_one_transition_wins_when_twenty_race(backend: Backend, store: JobStore) -> None:
    record = job()
    await create_job(store, record)
    stores = [store, *(backend.open() for _ in range(3))]
    outcomes = await asyncio.gather(
        *(
            stores[i % 4].transition(record.id, JobStatus.RUNNING, allowed_from=QUEUED, attempts=i)
            for i in range(20)
        )
    )
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert await store.get_job(record.id) == winners[0]


async def test_claims_answer_in_flight_done_and_mismatch(store: JobStore) -> None:
    first, second = job(), job()
    claim = ("key-1", "hash-a")
    assert await create_job(store, first, claim=claim) == Claim(NEW, first.id)
    assert await create_job(store, second, claim=claim) == Claim(ClaimState.IN_FLIGHT, first.id)
    assert await store.get_job(second.id) is None
    other_body = ("key-1", "hash-b")
    assert await create_job(store, job(), claim=other_body) == Claim(ClaimState.MISMATCH, first.id)
    await store.confirm_jobs([Confirmed(first.id, b'{"id": "\xff"}', ttl_s=60)])
    done = Claim(ClaimState.DONE, first.id, b'{"id": "\xff"}')
    assert await create_job(store, second, claim=claim) == done
    assert await create_job(store, job(), claim=other_body) == Claim(ClaimState.MISMATCH, first.id)
    assert [j.id for j in (await store.list_jobs()).jobs] == [first.id]


async def test_key_can_be_claimed_again_when_its_lease_expired(store: JobStore) -> None:
    first, second = job(), job()
    # Long enough that a loaded machine still makes the next claim within it.
    await create_job(store, first, claim=("key", "h"), lease_s=0.5)
    assert (await create_job(store, job(), claim=("key", "h"))).state is ClaimState.IN_FLIGHT
    await asyncio.sleep(0.6)  # let the lease run out: time itself is what is tested
    assert await create_job(store, second, claim=("key", "h")) == Claim(NEW, second.id)
    assert await create_job(store, job(), claim=("key", "h")) == Claim(
        ClaimState.IN_FLIGHT, second.id
    )
    await store.abandon_job(first.id, "key")  # the key is no longer first's, so it stays held
    assert await create_job(store, job(), claim=("key", "h")) == Claim(
        ClaimState.IN_FLIGHT, second.id
    )


async def test_key_can_be_claimed_again_when_its_replay_window_closed(store: JobStore) -> None:
    first, second = job(), job()
    await create_job(store, first, claim=("key", "h"))
    await store.confirm_jobs([Confirmed(first.id, b"{}", ttl_s=0.05)])
    await asyncio.sleep(0.1)  # let the replay window close
    assert await create_job(store, second, claim=("key", "h")) == Claim(NEW, second.id)


async def test_a_late_completion_does_not_complete_a_newer_claim(store: JobStore) -> None:
    first, second = job(), job()
    await create_job(store, first, claim=("key", "h"), lease_s=0.05)
    await asyncio.sleep(0.1)  # first's lease runs out; second takes the key over
    assert await create_job(store, second, claim=("key", "h")) == Claim(NEW, second.id)
    await store.confirm_jobs([Confirmed(first.id, b'{"late": true}', ttl_s=60)])
    assert await create_job(store, job(), claim=("key", "h")) == Claim(
        ClaimState.IN_FLIGHT, second.id
    )


async def test_abandon_job_deletes_the_job_and_frees_its_key(store: JobStore) -> None:
    first, second = job(), job()
    await create_job(store, first, claim=("key", "h"))
    await store.abandon_job(first.id, "key")
    assert await store.get_job(first.id) is None
    assert await create_job(store, second, claim=("key", "h")) == Claim(NEW, second.id)
    unkeyed = job()
    await create_job(store, unkeyed)
    await store.abandon_job(unkeyed.id, None)
    assert await store.get_job(unkeyed.id) is None


async def test_abandon_job_keeps_a_job_a_worker_started_and_its_key(store: JobStore) -> None:
    # A confirm lost with the connection looks like a failed publish, yet the message arrived.
    started = job()
    await create_job(store, started, claim=("key", "h"))
    await store.run_window([], [RunStart(started.id, 1, 60.0, NOW)])
    await store.abandon_job(started.id, "key")
    kept = await store.get_job(started.id)
    assert kept is not None
    assert kept.status is JobStatus.RUNNING
    assert await create_job(store, job(), claim=("key", "h")) == Claim(
        ClaimState.IN_FLIGHT, started.id
    )


async def test_a_job_never_confirmed_is_taken_once_its_deadline_passed(store: JobStore) -> None:
    overdue, confirmed, later, unrecorded = job(), job(), job(), job()
    await store.create_jobs(
        [
            NewJob(overdue, confirm_within=0),
            NewJob(confirmed, confirm_within=0),
            NewJob(later, confirm_within=3600),
            NewJob(unrecorded),  # no deadline: taken to be on the broker
        ]
    )
    await store.confirm_jobs([Confirmed(confirmed.id)])
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == [overdue]
    # Taken: its deadline moved on, so a second sweep (or a concurrent one) leaves it alone.
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == []


async def test_a_lone_insert_records_the_confirms_it_carries_and_its_own_deadline(
    store: JobStore,
) -> None:
    held, lone, undated = job(), job(), job()
    await store.create_jobs([NewJob(held, confirm_within=0)])
    claims = await store.create_jobs(
        [NewJob(lone, confirm_within=0)], confirmed=[Confirmed(held.id)]
    )
    assert claims == [Claim(NEW, lone.id)]
    await store.create_jobs([NewJob(undated)])  # no deadline: taken to be on the broker
    assert await store.get_job(undated.id) == undated
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == [lone]


async def test_a_taken_job_is_taken_again_when_its_sweep_died(store: JobStore) -> None:
    record = job(status=JobStatus.SCHEDULED, not_before=NOW + timedelta(hours=1))
    await store.create_jobs([NewJob(record, confirm_within=0)])
    assert await store.take_unconfirmed(limit=10, lease_s=0) == [record]
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == [record]


async def test_jobs_a_worker_moved_on_are_never_taken(store: JobStore) -> None:
    record = job()
    await store.create_jobs([NewJob(record, confirm_within=0)])
    await store.transition(record.id, JobStatus.RUNNING, allowed_from=QUEUED)
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == []
    # Its deadline is gone for good: going back to queued (a retry) does not bring it back.
    await store.transition(record.id, JobStatus.QUEUED, allowed_from=frozenset(JobStatus))
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == []


async def test_taking_stops_at_the_limit_and_the_rest_wait_for_the_next_sweep(
    store: JobStore,
) -> None:
    records = [job() for _ in range(5)]
    await store.create_jobs([NewJob(r, confirm_within=0) for r in records])
    first = await store.take_unconfirmed(limit=3, lease_s=3600)
    rest = await store.take_unconfirmed(limit=3, lease_s=3600)
    assert len(first) == 3
    assert sorted(j.id for j in first + rest) == sorted(r.id for r in records)


async def test_confirming_a_keyed_job_completes_its_claim_in_the_same_call(
    store: JobStore,
) -> None:
    record = job()
    await store.create_jobs([NewJob(record, claim=("k", "h"), confirm_within=0)])
    await store.confirm_jobs([Confirmed(record.id, b'{"id": 1}', ttl_s=60)])
    assert await create_job(store, job(), claim=("k", "h")) == Claim(
        ClaimState.DONE, record.id, b'{"id": 1}'
    )
    assert await store.take_unconfirmed(limit=10, lease_s=3600) == []


async def test_one_create_wins_when_fifty_race_for_one_key(
    backend: Backend, store: JobStore
) -> None:
    stores = [store, *(backend.open() for _ in range(4))]
    records = [job() for _ in range(50)]
    claims = await asyncio.gather(
        *(create_job(stores[i % 5], r, claim=("race", "h")) for i, r in enumerate(records))
    )
    winners = [c for c in claims if c.state is NEW]
    assert len(winners) == 1
    assert {c.job_id for c in claims} == {winners[0].job_id}
    assert [j.id for j in (await store.list_jobs(JobSearch(limit=100))).jobs] == [winners[0].job_id]


async def test_store_is_unavailable_when_its_database_cannot_be_reached(backend: Backend) -> None:
    store = backend.open(reachable=False)
    with pytest.raises(StoreUnavailableError) as caught:
        await store.ping()
    assert caught.value.__cause__ is not None
    with pytest.raises(StoreUnavailableError):
        await store.migrate()
    with pytest.raises(StoreUnavailableError):
        await create_job(store, job())


async def test_caller_mistakes_raise_and_store_nothing(store: JobStore) -> None:
    record = job()
    with pytest.raises(ValueError, match="timezone-aware"):
        await create_job(store, replace(record, created_at=datetime(2026, 1, 1)))
    assert await store.get_job(record.id) is None
    await create_job(store, record)
    with pytest.raises(TypeError, match="cannot set id"):
        await store.transition(record.id, JobStatus.RUNNING, allowed_from=QUEUED, id="x")
    with pytest.raises(ValueError, match="limit"):
        await store.list_jobs(JobSearch(limit=0))
    with pytest.raises(StoreError):  # not JSON
        await create_job(store, job(payload={"x": object()}))


async def test_a_closed_store_refuses_work(store: JobStore) -> None:
    await store.close()
    with pytest.raises(StoreError, match="closed") as caught:
        await store.ping()
    assert not isinstance(caught.value, StoreUnavailableError)
    await store.close()  # closing twice is fine


async def test_open_store_reads_sqlite_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///.taskq/jobs.sqlite3")
    absolute = open_store(f"sqlite:///{tmp_path}/abs/jobs.sqlite3")
    assert isinstance(relative, SqliteJobStore)
    assert isinstance(absolute, SqliteJobStore)
    assert absolute.path == tmp_path / "abs" / "jobs.sqlite3"
    try:
        assert await relative.migrate() == LATEST
        assert await absolute.migrate() == LATEST
    finally:
        await relative.close()
        await absolute.close()
    assert (tmp_path / ".taskq" / "jobs.sqlite3").is_file()
    assert (tmp_path / "abs" / "jobs.sqlite3").is_file()


@pytest.mark.parametrize("url", ["postgresql://u:p@db:5432/taskq", "postgres://db/taskq"])
def test_open_store_reads_postgres_urls(url: str) -> None:
    assert isinstance(open_store(url), PostgresJobStore)


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@db/taskq", "jobs.sqlite3", "sqlite://secret@host/x", "sqlite:///"]
)
def test_open_store_refuses_other_urls_naming_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="TASKQ_STORE_URL") as caught:
        open_store(url)
    assert "secret" not in str(caught.value)


def breaker(**changes: Any) -> BreakerRecord:
    base = BreakerRecord("mail", "smtp", "host-a:101", "open", 5, NOW)
    return replace(base, **changes)


async def test_breakers_are_upserted_per_group_dependency_and_worker(
    backend: Backend, store: JobStore
) -> None:
    assert await store.list_breakers() == []
    opened = breaker()
    await store.record_breaker(opened)
    await store.record_breaker(breaker(worker="host-b:202", state="half_open"))
    await store.record_breaker(breaker(group="billing", dependency="stripe"))
    later = NOW + timedelta(seconds=30, microseconds=7)
    await store.record_breaker(breaker(state="closed", failures=0, changed_at=later))
    # Another process (taskctl) sees what the worker wrote.
    other = backend.open()
    assert await other.list_breakers() == [
        breaker(group="billing", dependency="stripe"),
        breaker(state="closed", failures=0, changed_at=later),
        breaker(worker="host-b:202", state="half_open"),
    ]
    assert [b.worker for b in await other.list_breakers("mail")] == ["host-a:101", "host-b:202"]
    assert await other.list_breakers("nobody") == []


async def test_forgetting_a_worker_deletes_only_its_breakers(store: JobStore) -> None:
    await store.record_breaker(breaker())
    await store.record_breaker(breaker(dependency="db"))
    await store.record_breaker(breaker(worker="host-b:202"))
    await store.forget_breakers("host-a:101")
    assert await store.list_breakers() == [breaker(worker="host-b:202")]
    await store.forget_breakers("host-a:101")  # nothing left to forget is fine


async def test_breaker_times_round_trip_as_the_same_instant(store: JobStore) -> None:
    pacific = NOW.astimezone(timezone(timedelta(hours=-8)))
    await store.record_breaker(breaker(changed_at=pacific))
    (found,) = await store.list_breakers()
    assert found.changed_at == NOW
    assert found.changed_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.record_breaker(breaker(dependency="db", changed_at=datetime(2026, 1, 1)))
    assert [b.dependency for b in await store.list_breakers()] == ["smtp"]


async def test_breakers_are_unavailable_when_the_database_cannot_be_reached(
    backend: Backend,
) -> None:
    down = backend.open(reachable=False)
    with pytest.raises(StoreUnavailableError):
        await down.record_breaker(breaker())
    with pytest.raises(StoreUnavailableError):
        await down.list_breakers()


@pytest.mark.parametrize("size", [1, 3])
async def test_rows_written_without_waiting_for_the_disk_are_seen_by_every_process(
    backend: Backend, size: int
) -> None:
    writer, reader = backend.open(), backend.open()
    await writer.migrate()
    records = [job() for _ in range(size)]
    claims = await writer.create_jobs(
        [NewJob(r, confirm_within=60) for r in records], durable=False
    )
    assert [c.state for c in claims] == [ClaimState.NEW] * size
    assert [await reader.get_job(r.id) for r in records] == records


@pytest.mark.postgres
async def test_a_relaxed_commit_leaves_the_pooled_connection_as_it_was(postgres_url: str) -> None:
    async with scratch_database(postgres_url) as dsn:
        store = PostgresJobStore(dsn, min_size=1, max_size=1)  # one connection: always the same
        await store.migrate()
        await store.create_jobs([NewJob(job())], durable=False)
        await store.create_jobs([NewJob(job()), NewJob(job())], durable=False)
        [(setting,)] = await store._fetch("SHOW synchronous_commit")
        await store.close()
    assert setting == "on"


def test_a_rows_values_are_each_columns_value_as_the_store_takes_it(tmp_path: Path):
    # The row of a new job is built without a call per column: it must be what that call gives.
    from jobstore.model import JobRecord
    from jobstore.shared_sql import COLUMNS

    store = SqliteJobStore(f"sqlite:///{tmp_path}/jobs.sqlite3")
    now = datetime.now(UTC)
    full = JobRecord(
        id=new_job_id(),
        type="email",
        status=JobStatus.SUCCEEDED,
        priority=Priority.HIGH,
        created_at=now,
        updated_at=now,
        payload={"to": "a"},
        payload_ref={"uri": "file:/x"},
        attempts=2,
        max_attempts=5,
        idempotency_key="k",
        correlation_id="c",
        callback_url="https://example.com/",
        not_before=now,
        started_at=now,
        finished_at=now,
        last_error="boom",
        result=[1, 2],
        tenant="acme",
        trace_id="t",
        workflow_id="w",
    )
    sparse = JobRecord(new_job_id(), "email", JobStatus.QUEUED, Priority.LOW, now, now)
    for job in (full, sparse):
        expected = [store._value_in(name, getattr(job, name)) for name in COLUMNS]
        assert store._row(job) == expected

"""Retention: the store's sweep on every backend, the sweep of blobs and orphans, and a store that stays flat."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.blobs import BlobStore, LocalDirBlobStore, blob_key
from jobstore.model import JobRecord, JobStatus, JobStore, NewJob
from jobstore.postgres import PostgresJobStore
from jobstore.retention import RetentionMetrics, RetentionSweep
from jobstore.s3_blobs import S3BlobStore
from jobstore.shared_sql import _EXPIRE, _FINISHED_TYPES
from jobstore.sqlite import SqliteJobStore
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from tests.helpers import compiled, eventually
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, s3_client
from topology.apply import apply_topology
from topology.envelope import new_job_id
from topology.settings import SubmitSettings, WorkerSettings
from topology.spec import Priority

HOUR = 3600.0
# Longer than the 1 ms grace these sweeps give, so a blob just written is past it when they look.
GRACE_PASSED = 0.02
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)


def an_hour(job_type: str, dead: bool) -> float:
    return HOUR


def ended(
    ago: float,
    *,
    status: JobStatus = JobStatus.SUCCEEDED,
    job_type: str = "email",
    uri: str | None = None,
) -> JobRecord:
    """Return a job that ended ``ago`` seconds ago (a job not final with the same end time)."""
    at = datetime.now(UTC) - timedelta(seconds=ago)
    ref = None if uri is None else {"uri": uri, "sha256": "0" * 64, "size": 1}
    return JobRecord(
        id=new_job_id(),
        type=job_type,
        status=status,
        priority=Priority.MEDIUM,
        created_at=at - timedelta(seconds=1),
        updated_at=at,
        finished_at=at,
        payload_ref=ref,
    )


async def stored(store: JobStore, *jobs: JobRecord) -> list[JobRecord]:
    await store.create_jobs([NewJob(job) for job in jobs])
    return list(jobs)


async def left(store: JobStore, jobs: list[JobRecord]) -> list[JobRecord]:
    return [job for job in jobs if await store.get_job(job.id) is not None]


# The store's sweep: memory, SQLite and PostgreSQL.


async def test_a_sweep_deletes_final_jobs_past_retention_and_returns_their_blobs(store: JobStore):
    old = await stored(store, *(ended(2 * HOUR, status=s, uri=f"file:///blobs/{s}") for s in FINAL))
    young = await stored(store, ended(60), ended(60, status=JobStatus.DEAD))
    # Not final: never deleted, however long ago a run of theirs ended (a replay, a retry).
    alive = await stored(
        store, *(ended(2 * HOUR, status=s) for s in (JobStatus.QUEUED, JobStatus.RUNNING))
    )
    swept = await store.sweep(an_hour, limit=100)
    assert swept.jobs == 4
    assert sorted(swept.blobs) == sorted(f"file:///blobs/{s}" for s in FINAL)
    assert await left(store, old) == []
    assert await left(store, young + alive) == young + alive
    assert (await store.sweep(an_hour, limit=100)).jobs == 0


async def test_each_type_is_kept_for_its_own_retention_and_a_dead_job_as_asked(store: JobStore):
    def kept_for(job_type: str, dead: bool) -> float:
        return {"short": 60.0, "long": 86400.0}[job_type] * (3 if dead else 1)

    # Long-kept jobs that ended before the short ones must not stand in their way.
    long_young = await stored(store, *(ended(600, job_type="long") for _ in range(5)))
    long_old = await stored(store, ended(2 * 86400, job_type="long"))
    short_old = await stored(store, *(ended(120, job_type="short") for _ in range(3)))
    dead_young = await stored(store, ended(120, job_type="short", status=JobStatus.DEAD))
    dead_old = await stored(store, ended(200, job_type="short", status=JobStatus.DEAD))
    first = await store.sweep(kept_for, limit=2)
    second = await store.sweep(kept_for, limit=10)
    assert (first.jobs, second.jobs) == (2, 3)
    assert await left(store, long_old + short_old + dead_old) == []
    assert await left(store, long_young + dead_young) == long_young + dead_young


async def test_a_sweep_takes_a_bounded_batch_oldest_first(store: JobStore):
    jobs = await stored(store, *(ended(HOUR + 60 * (10 - n)) for n in range(7)))
    counts = [(await store.sweep(an_hour, limit=3)).jobs for _ in range(4)]
    assert counts == [3, 3, 1, 0]
    assert await left(store, jobs) == []


async def test_the_oldest_go_first(store: JobStore):
    jobs = await stored(store, *(ended(HOUR + 60 * (10 - n)) for n in range(5)))
    await store.sweep(an_hour, limit=2)
    assert await left(store, jobs) == jobs[2:]


async def test_a_sweep_names_the_asked_ids_that_no_job_has(store: JobStore):
    [kept] = await stored(store, ended(60))
    missing = [new_job_id(), new_job_id()]
    swept = await store.sweep(an_hour, limit=10, ask=[missing[1], kept.id, missing[0]])
    assert swept.unknown == [missing[1], missing[0]]


async def test_a_swept_jobs_idempotency_key_is_free_again(store: JobStore):
    job = ended(2 * HOUR)
    [claim] = await store.create_jobs([NewJob(job, ("order-1", "hash"))])
    assert claim.job_id == job.id
    await store.sweep(an_hour, limit=10)
    [again] = await store.create_jobs([NewJob(ended(0), ("order-1", "hash"))])
    assert again.state.value == "new"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_the_sweep_statements_use_the_index_of_finished_jobs(store: JobStore):
    if isinstance(store, SqliteJobStore):
        with sqlite3.connect(store.path) as db:
            plans = [
                " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
                for sql, args in [
                    (_FINISHED_TYPES, ()),
                    (_EXPIRE.replace("$", "?"), ("email", 0, 0, 10)),
                ]
            ]
    else:
        assert isinstance(store, PostgresJobStore)  # the in-memory twin has no query plans
        async with store._use(transaction=True) as conn:
            await conn.execute("SET LOCAL enable_seqscan = off")  # an empty table: scan it else
            expire = _EXPIRE.replace("$1", "'email'").replace("$4", "10")
            expire = expire.replace("$2", "now()").replace("$3", "now()")
            plans = [
                " ".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}"))
                for sql in (_FINISHED_TYPES, expire)
            ]
    assert all("jobs_finished" in plan for plan in plans), plans


# The sweep of jobs and blobs, on a SQLite store with local or S3 blobs.


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalDirBlobStore(tmp_path / "blobs")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"taskq-test-{new_job_id()[-12:].lower()}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    store = S3BlobStore(
        bucket, endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    try:
        yield store
    finally:
        await store.close()
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        for item in listed:
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        client.close()


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def with_blob(blobs: BlobStore, job: JobRecord) -> JobRecord:
    ref = await blobs.put(blob_key(job.id), b'{"big": true}', "application/json")
    return replace(job, payload_ref=ref.model_dump())


async def blob_ids(blobs: BlobStore) -> set[str]:
    return {blob.job_id for blob in await blobs.scan(after="", limit=1000)}


async def test_a_sweep_deletes_expired_jobs_with_their_blobs_and_orphaned_blobs(
    sqlite: SqliteJobStore, blobs: BlobStore
):
    expired = await with_blob(blobs, ended(2 * HOUR))
    young = await with_blob(blobs, ended(60))
    queued = await with_blob(blobs, ended(2 * HOUR, status=JobStatus.QUEUED))
    await stored(sqlite, expired, young, queued)
    orphan = new_job_id()  # its submission stopped after writing the blob
    await blobs.put(blob_key(orphan), b"{}", "application/json")
    await asyncio.sleep(GRACE_PASSED)
    metrics = RetentionMetrics()
    sweep = RetentionSweep(sqlite, blobs, an_hour, grace=0.001, batch=2, metrics=metrics)
    report = await sweep.sweep()
    assert (report.jobs, report.blobs, report.orphans) == (1, 1, 1)
    assert await blob_ids(blobs) == {young.id, queued.id}
    assert await left(sqlite, [expired, young, queued]) == [young, queued]
    counted = metrics.registry.get_sample_value
    assert counted("taskq_retention_jobs_removed_total") == 1
    assert counted("taskq_retention_blobs_removed_total", {"reason": "expired"}) == 1
    assert counted("taskq_retention_blobs_removed_total", {"reason": "orphaned"}) == 1


async def test_an_orphaned_blob_is_kept_for_its_grace(sqlite: SqliteJobStore, tmp_path: Path):
    blobs = LocalDirBlobStore(tmp_path / "blobs")
    old, new = new_job_id(), new_job_id()
    for job_id in (old, new):
        await blobs.put(blob_key(job_id), b"{}", "application/json")
    two_hours_ago = time.time() - 2 * HOUR
    os.utime(tmp_path / "blobs" / blob_key(old), (two_hours_ago, two_hours_ago))
    report = await RetentionSweep(sqlite, blobs, an_hour, grace=HOUR).sweep()
    assert report.orphans == 1
    assert await blob_ids(blobs) == {new}


async def test_a_pass_is_bounded_and_the_next_goes_on_where_it_stopped(
    sqlite: SqliteJobStore, tmp_path: Path
):
    blobs = LocalDirBlobStore(tmp_path / "blobs")
    jobs = await stored(sqlite, *(ended(2 * HOUR) for _ in range(5)))
    for _ in range(5):
        await blobs.put(blob_key(new_job_id()), b"{}", "application/json")
    await asyncio.sleep(GRACE_PASSED)
    sweep = RetentionSweep(sqlite, blobs, an_hour, grace=0.001, batch=2)
    first = await sweep.sweep(steps=1)
    second = await sweep.sweep(steps=1)
    rest = await sweep.sweep()
    assert [(r.jobs, r.orphans) for r in (first, second)] == [(2, 2), (2, 2)]
    assert (rest.jobs, rest.orphans) == (1, 1)
    assert await left(sqlite, jobs) == []
    assert await blob_ids(blobs) == set()


# A store that stays flat: thousands of jobs through the broker and a worker, swept behind.

FLAT = compiled(
    """
    delays: {resolution: 250ms, longest: 1m}
    groups:
      flat:
        jobs: ["flat.#"]
        prefetch: 256
        concurrency: 64
        retention: 1s
    """
)
ROUNDS, PER_ROUND = 6, 500


def rows_and_bytes(path: Path) -> tuple[int, int]:
    """Return the rows of the jobs table and the bytes of the database (what a checkpoint leaves)."""
    with closing(sqlite3.connect(path)) as db:
        [(rows,)] = db.execute("SELECT count(*) FROM jobs").fetchall()
        [(pages,)] = db.execute("PRAGMA page_count").fetchall()
        [(size,)] = db.execute("PRAGMA page_size").fetchall()
    return rows, pages * size


@pytest.mark.rabbitmq
async def test_the_store_stays_flat_while_thousands_of_jobs_run_through(vhost, tmp_path: Path):
    await apply_topology(FLAT, vhost)
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    await store.migrate()
    blobs = LocalDirBlobStore(tmp_path / "blobs")
    publisher = await ConfirmedPublisher.connect(vhost, FLAT)
    # Every tenth payload is claim-checked: those jobs leave a blob to remove too.
    submitter = Submitter(FLAT, publisher, store, blobs, SubmitSettings(claim_check_bytes=1000))
    registry = HandlerRegistry()

    @registry.handler("flat.job")
    async def echo(payload: Any, ctx: JobContext) -> Any:
        return {"n": payload["n"]}

    settings = WorkerSettings(grace=5)
    worker = Worker(Deps(FLAT, FLAT.group("flat"), registry, store, blobs, publisher, settings))
    await worker.start(vhost)
    sweep = RetentionSweep(store, blobs, FLAT.kept_for, grace=1)
    sweeping = asyncio.create_task(sweep.keep_sweeping(0.2))
    seen: list[tuple[int, int]] = []  # (rows, bytes) every tenth of a second
    after: list[int] = []  # bytes once a round's jobs and blobs were all removed

    async def swept() -> bool:
        seen.append(rows_and_bytes(path))
        return seen[-1][0] == 0 and not await blob_ids(blobs)

    try:
        for _ in range(ROUNDS):
            requests = [
                JobRequest(type="flat.job", payload={"n": n, "pad": "x" * (2000 * (n % 10 == 0))})
                for n in range(PER_ROUND)
            ]
            results = await submitter.submit_many(requests)
            assert not [r for r in results if isinstance(r, Exception)]
            await eventually(swept, within=30, every=0.1)
            after.append(seen[-1][1])
    finally:
        sweeping.cancel()
        await worker.stop(grace=2)
        await submitter.close()
        await publisher.close()
        await store.close()
    # The table never held much more than a round, and the database is no larger after the
    # last round than after the first: the sweep's freed pages are reused.
    assert max(rows for rows, _ in seen) <= PER_ROUND * 1.2, seen
    assert max(after) <= after[0] * 1.1, after

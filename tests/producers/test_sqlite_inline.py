"""SqliteJobStore's inline writes: on the loop while the lock is free, on its thread when it is not."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobstore import sqlite_connections
from jobstore.model import ClaimState, JobRecord, JobSearch, JobStatus, NewJob
from jobstore.sqlite import SqliteJobStore
from jobstore.sqlite_connections import CHECKPOINT_COMMITS, Busy, InlineWriter
from tests.helpers import create_job
from topology.envelope import new_job_id
from topology.errors import StoreError
from topology.spec import Priority


def job() -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id=new_job_id(),
        type="email",
        status=JobStatus.QUEUED,
        priority=Priority.MEDIUM,
        created_at=now,
        updated_at=now,
        payload={"n": 1},
    )


@pytest.fixture
async def store(tmp_path: Path):
    opened = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await opened.migrate()
    yield opened
    await opened.close()


def holder(path: Path) -> sqlite3.Connection:
    """Return a connection holding SQLite's write lock, as another process's writer would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_a_create_that_finds_the_lock_held_waits_on_the_thread_and_lands(store, tmp_path):
    other = holder(tmp_path / "jobs.sqlite3")
    first = job()
    creating = asyncio.create_task(store.create_jobs([NewJob(first)]))
    for _ in range(5):  # let the inline attempt fail and the unit reach the thread
        await asyncio.sleep(0)
    assert not creating.done()
    other.execute("COMMIT")
    other.close()
    async with asyncio.timeout(10):
        [claim] = await creating
    assert claim.job_id == first.id
    assert (await store.get_job(first.id)) == first


async def test_a_lock_held_briefly_is_waited_out_on_the_loop_not_the_thread(
    store, tmp_path, monkeypatch
):
    # Another process's write transaction ends within a fraction of a millisecond (a second of
    # patience here, so a busy machine's scheduling cannot fail the test).
    monkeypatch.setattr(sqlite_connections, "INLINE_PATIENCE_S", 1.0)
    other = sqlite3.connect(
        tmp_path / "jobs.sqlite3", isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.0005, lambda: (other.execute("COMMIT"), other.close()))
    sent = []
    run = store._thread.run

    async def spy(work, *, write=False):
        sent.append(write)
        return await run(work, write=write)

    store._thread.run = spy
    first = job()
    release.start()
    [claim] = await store.create_jobs([NewJob(first)])
    release.join()
    assert claim.job_id == first.id
    assert sent == []  # written inline, once the lock was free
    assert (await store.get_job(first.id)) == first


def test_the_inline_writer_gives_up_on_a_lock_held_past_its_patience(store, tmp_path):
    path = tmp_path / "jobs.sqlite3"
    other = holder(path)
    writer = InlineWriter(path)
    try:
        with pytest.raises(Busy):
            writer.write(lambda db: db.execute("DELETE FROM jobs"))
        other.execute("COMMIT")
        assert writer.write(lambda db: db.execute("SELECT count(*) FROM jobs").fetchall()) == [(0,)]
    finally:
        writer.close()
        other.close()


async def test_a_failed_inline_write_is_rolled_back_whole(store):
    kept = job()
    await store.create_jobs([NewJob(kept)])
    with pytest.raises(StoreError, match="JSON"):
        # The key is claimed, then the second row fails to encode.
        await store.create_jobs(
            [NewJob(job(), claim=("k", "h")), NewJob(replace(job(), payload=object()))]
        )
    page = await store.list_jobs(JobSearch(limit=10))
    assert [j.id for j in page.jobs] == [kept.id]
    claim = await create_job(store, job(), claim=("k", "h"))
    assert claim.state is ClaimState.NEW


async def test_inline_writes_leave_checkpoints_to_the_thread_so_the_log_stays_bounded(
    store, tmp_path
):
    wal = tmp_path / "jobs.sqlite3-wal"
    for _ in range(CHECKPOINT_COMMITS * 10):
        await store.create_jobs([NewJob(job())])
        if store._checkpoint is not None:
            await store._checkpoint
    # Each commit of one job appends about 5 pages to the log, which only a checkpoint lets
    # SQLite write over again: unchecked, these 2,000 commits leave a log of some 40 MB.
    assert wal.stat().st_size < CHECKPOINT_COMMITS * 8 * 4096

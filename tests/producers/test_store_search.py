"""What the console asks of every job store: searches, queued counts, and the DLQ audit."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobstore.model import AuditEntry, JobSearch, JobStatus, JobStore
from jobstore.postgres import PostgresJobStore
from jobstore.shared_sql import _QUEUED_COUNTS
from jobstore.sqlite import SqliteJobStore
from tests.helpers import create_job
from tests.producers.test_store import job
from topology.envelope import new_job_id
from topology.names import Priority

START = datetime.now(UTC).replace(microsecond=0)


async def listed(store: JobStore, **filters: object) -> list[str]:
    ids, cursor = [], None
    while True:
        page = await store.list_jobs(JobSearch(limit=3, cursor=cursor, **filters))  # type: ignore[arg-type]
        ids += [j.id for j in page.jobs]
        if (cursor := page.next_cursor) is None:
            return ids


async def test_a_search_by_correlation_id_pages_through_one_tenants_matches(store: JobStore):
    records = [
        job(correlation_id="order-1" if n % 2 else None, tenant="acme" if n < 8 else "other")
        for n in range(10)
    ]
    for record in records:
        await create_job(store, record)
    found = await listed(store, tenant="acme", correlation_id="order-1")
    assert found == [r.id for r in reversed(records) if r.tenant == "acme" and r.correlation_id]
    assert await listed(store, tenant="acme", correlation_id="order-2") == []


async def test_a_search_by_creation_time_takes_from_inclusive_to_before_exclusive(
    store: JobStore,
):
    # Ids made as the jobs are, as the submitter makes them: their time is the creation time.
    records = []
    for minute in range(6):
        record = job(created_at=datetime.now(UTC) + timedelta(minutes=minute))
        records.append(record)
        await create_job(store, record)
    since, before = records[1].created_at, records[4].created_at
    found = await listed(store, created=(since, before))
    assert found == [r.id for r in reversed(records[1:4])]
    assert await listed(store, created=(None, since)) == [records[0].id]
    assert await listed(store, created=(before, None)) == [records[5].id, records[4].id]
    both = await listed(store, created=(since, None), status=JobStatus.QUEUED, type="email")
    assert both == [r.id for r in reversed(records[1:])]


async def test_queued_counts_are_by_type_and_priority_of_queued_jobs_only(store: JobStore):
    for record in (
        job(),
        job(),
        job(priority=Priority.URGENT),
        job(type="sms", priority=Priority.LOW, tenant="other"),
        job(status=JobStatus.RUNNING),
        job(status=JobStatus.DEAD),
    ):
        await create_job(store, record)
    counts = sorted(await store.queued_counts())
    assert counts == sorted(
        [("email", Priority.MEDIUM, 2), ("email", Priority.URGENT, 1), ("sms", Priority.LOW, 1)]
    )


async def test_an_audit_entry_is_written_then_completed_and_listed_newest_first(
    store: JobStore,
):
    started = AuditEntry(
        id=new_job_id(),
        at=START,
        actor="key:0123456789abcdef",
        actor_name="on-call",
        tenant="acme",
        group="email",
        action="replay",
        target="type email",
        rate=50.0,
    )
    await store.record_audit(started)
    assert await store.list_audit("acme", "email") == [started]
    done = replace(started, matched=3, kept=1, finished_at=START + timedelta(seconds=2))
    await store.record_audit(done)
    later = replace(started, id=new_job_id(), action="purge", rate=None, target="all")
    await store.record_audit(later)
    await store.record_audit(replace(later, id=new_job_id(), tenant="other"))
    await store.record_audit(replace(later, id=new_job_id(), group="github"))
    assert await store.list_audit("acme", "email") == [later, done]
    assert await store.list_audit("acme", "email", limit=1) == [later]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_queued_counts_read_the_queued_jobs_from_an_index_not_the_table(store: JobStore):
    if isinstance(store, SqliteJobStore):
        with sqlite3.connect(store.path) as db:
            plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_QUEUED_COUNTS}"))
        wanted = "SEARCH j USING COVERING INDEX jobs_tenant_status_id (tenant=? AND status=?)"
        assert wanted in plan, plan
    else:
        assert isinstance(store, PostgresJobStore)  # the in-memory twin has no query plans
        async with store._use(transaction=True) as conn:
            await conn.execute("SET LOCAL enable_seqscan = off")  # an empty table: scan it else
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            rows = await conn.fetch(f"EXPLAIN {_QUEUED_COUNTS}")
        plan = " ".join(row[0] for row in rows)
        assert "Index Only Scan using jobs_tenant_status_id on jobs j" in plan, plan

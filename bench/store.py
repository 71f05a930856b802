"""Job store write throughput: SqliteJobStore and PostgresJobStore, one at a time and concurrent.

Usage: .venv/bin/python bench/store.py [--jobs 2000] [--concurrency 64] [--rounds 3] [--postgres-url URL]

Each backend gets a fresh database (SQLite: a file in a temporary folder; PostgreSQL: a
scratch database on ``--postgres-url``, default ``$TASKQ_TEST_POSTGRES_URL`` or the local
server, dropped afterwards; skipped when unreachable). Two workloads, each timed one call
at a time and with ``--concurrency`` tasks sharing the store:

- ``create``: ``create_jobs`` of one job without an idempotency key (one insert).
- ``create+claim+complete``: ``create_jobs`` of one job with a fresh key, then
  ``confirm_jobs`` completing its claim (what the HTTP API does per keyed request); one op is
  the pair.

Each cell is the median of ``--rounds`` runs (fresh jobs each time, same database), since a
shared machine's noise easily moves a single run by a factor of two. PostgreSQL uses the
store's default pool (10 connections), so 64 tasks queue for them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from jobstore.model import Confirmed, JobRecord, JobStatus, JobStore, NewJob
from jobstore.postgres import PostgresJobStore
from jobstore.sqlite import SqliteJobStore
from topology.envelope import new_job_id
from topology.errors import StoreUnavailableError
from topology.spec import Priority

DEFAULT_PG = os.environ.get(
    "TASKQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def make_job(i: int) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id=new_job_id(),
        type="email",
        status=JobStatus.QUEUED,
        priority=Priority.MEDIUM,
        created_at=now,
        updated_at=now,
        payload={"to": f"user{i}@example.com", "template": "welcome", "n": i},
    )


async def plain(store: JobStore, job: JobRecord) -> None:
    await store.create_jobs([NewJob(job)])


async def keyed(store: JobStore, job: JobRecord) -> None:
    await store.create_jobs([NewJob(job, claim=(f"key-{job.id}", "hash"))])
    await store.confirm_jobs([Confirmed(job.id, b'{"id": "x"}', ttl_s=3600)])


Op = Callable[[JobStore, JobRecord], Awaitable[None]]


async def timed(store: JobStore, op: Op, jobs: int, concurrency: int) -> float:
    """Return ops/s for ``jobs`` calls of ``op`` spread over ``concurrency`` tasks."""
    pending = iter([make_job(i) for i in range(jobs)])

    async def worker() -> None:
        for job in pending:  # tasks share one iterator: each job is taken once
            await op(store, job)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return jobs / (time.perf_counter() - start)


@asynccontextmanager
async def scratch_postgres(admin_url: str) -> AsyncIterator[str]:
    name = f"taskq_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench(name: str, store: JobStore, args: argparse.Namespace) -> None:
    try:
        await store.migrate()
        for label, op in (("create", plain), ("create+claim+complete", keyed)):
            for concurrency in (1, args.concurrency):
                runs = [await timed(store, op, args.jobs, concurrency) for _ in range(args.rounds)]
                rate = statistics.median(runs)
                mode = "sequential" if concurrency == 1 else f"{concurrency} tasks"
                print(f"{name:<10} {label:<24} {mode:<12} {rate:>10,.0f} ops/s", flush=True)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    args = parser.parse_args()
    print(f"{'backend':<10} {'workload':<24} {'mode':<12} {'throughput':>16}")
    with tempfile.TemporaryDirectory() as folder:
        await bench("sqlite", SqliteJobStore(Path(folder) / "jobs.sqlite3"), args)
    try:
        async with scratch_postgres(args.postgres_url) as dsn:
            await bench("postgres", PostgresJobStore(dsn), args)
    except (OSError, asyncpg.PostgresError, StoreUnavailableError) as exc:
        print(f"postgres   skipped: {exc}")


if __name__ == "__main__":
    asyncio.run(main())

"""The SQLite store's execution claims, and its batched run starts and finishes.

Functions of the connection, run on its thread (``SqliteThread``). Those marked so run inside
the caller's ``BEGIN IMMEDIATE`` transaction, so their reads and the writes that follow see
one state of the file, and no other process slips in between. Batched statements take every
item of a batch at once: Python's work per statement is what a row costs here, far more than
SQLite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC
from typing import Any

import orjson

from jobstore.model import (
    SETTLED,
    STARTABLE,
    Execution,
    ExecutionState,
    JobRecord,
    JobStatus,
    RunFinish,
    RunStart,
    RunStarted,
    StartOutcome,
)
from jobstore.sqlite_rows import COLUMNS, now_us, record, seconds_us, to_us

PURGE_BATCH = 100  # expired claims deleted per finish, so the table stays bounded
# Takes the key whoever holds it: batched starts decide in Python, under the write lock.
_TAKE = (
    "INSERT INTO executions (key, job_id, state, result, lease_until, expires_at)"
    " VALUES (?, ?, 'pending', NULL, ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET job_id = excluded.job_id, state = 'pending', result = NULL,"
    " lease_until = excluded.lease_until, expires_at = excluded.expires_at"
)
# Inside BEGIN IMMEDIATE: takes a free key or one whose lease (or result's ttl) is over; a held
# key returns nothing, and the write lock keeps it as it is for the SELECT that follows.
CLAIM_EXECUTION = f"{_TAKE} WHERE executions.expires_at <= ? RETURNING job_id"
HELD_EXECUTION = "SELECT job_id, state, result FROM executions WHERE key = ?"
FINISH_EXECUTION = (
    "UPDATE executions SET state = 'done', result = ?, expires_at = ?"
    " WHERE key = ? AND job_id = ? AND state = 'pending'"
)
PURGE_EXECUTIONS = (
    "DELETE FROM executions WHERE key IN"
    f" (SELECT key FROM executions WHERE expires_at <= ? LIMIT {PURGE_BATCH})"
)


_STARTABLE = tuple(status.value for status in STARTABLE)
_IN_STARTABLE = f"status IN ({', '.join('?' * len(_STARTABLE))})"
_COUNT = "UPDATE jobs SET deliveries = deliveries + 1 WHERE id = ?"
_RUNNING = (
    "UPDATE jobs SET status = 'running', attempts = ?, started_at = ?, updated_at = ?"
    f" WHERE id = ? AND {_IN_STARTABLE}"
)
_SUCCEEDED = (
    "UPDATE jobs SET status = 'succeeded', result = ?, finished_at = ?, updated_at = ?"
    f" WHERE id = ? AND {_IN_STARTABLE}"
)


def start_runs(db: sqlite3.Connection, items: Sequence[RunStart]) -> list[RunStarted]:
    """Start every item's run (see ``JobStore.start_runs``) in the caller's write transaction."""
    now = now_us()
    jobs = _jobs(db, {item.job_id for item in items})
    # Live claims only: an expired lease (a crashed worker) or result (past its ttl) is free.
    claims = {
        key: (job_id, state, result)
        for key, job_id, state, result, expires_at in _select_in(
            db,
            "SELECT key, job_id, state, result, expires_at FROM executions",
            "key",
            {item.key for item in items},
        )
        if expires_at > now
    }
    taken: list[tuple[Any, ...]] = []
    running: list[tuple[Any, ...]] = []
    done: list[tuple[Any, ...]] = []
    started_runs: list[RunStarted] = []
    for item in items:
        found = jobs.get(item.job_id)
        job, deliveries = found if found is not None else (None, 0)
        if job is not None and job.status in SETTLED:
            started_runs.append(RunStarted(StartOutcome.SETTLED, deliveries, None, job))
            continue
        held = claims.get(item.key)
        if held is not None and held[1] == "done":
            result = orjson.loads(held[2])
            started = to_us(item.started_at)
            done.append((held[2], started, started, item.job_id, *_STARTABLE))
            # What the UPDATE below does to the row, done here too instead of reading it back.
            if job is not None and job.status in STARTABLE:
                when = item.started_at.astimezone(UTC)
                job = replace(
                    job,
                    status=JobStatus.SUCCEEDED,
                    result=result,
                    finished_at=when,
                    updated_at=when,
                )
                jobs[item.job_id] = (job, deliveries)
            started_runs.append(RunStarted(StartOutcome.DONE, deliveries, result, job))
            continue
        if held is not None:
            started_runs.append(RunStarted(StartOutcome.HELD, deliveries, None, job))
            continue
        # Ours now; a later item of this batch with the same key finds it held.
        until = now + seconds_us(item.lease_s)
        claims[item.key] = (item.job_id, "pending", None)
        taken.append((item.key, item.job_id, until, until))
        started = to_us(item.started_at)
        running.append((item.attempt, started, started, item.job_id, *_STARTABLE))
        if job is not None:
            deliveries += 1
            if job.status in STARTABLE:
                when = item.started_at.astimezone(UTC)
                job = replace(
                    job,
                    status=JobStatus.RUNNING,
                    attempts=item.attempt,
                    started_at=when,
                    updated_at=when,
                )
            jobs[item.job_id] = (job, deliveries)
        started_runs.append(RunStarted(StartOutcome.RUN, deliveries, None, job))
    if taken:
        db.executemany(_TAKE, taken)
        db.executemany(_COUNT, [(row[3],) for row in running])
        db.executemany(_RUNNING, running)
    if done:
        db.executemany(_SUCCEEDED, done)
    return started_runs


def finish_runs(db: sqlite3.Connection, items: Sequence[RunFinish]) -> list[JobRecord | None]:
    """Finish every item's run (see ``JobStore.finish_runs``) in the caller's write transaction."""
    succeeded = []
    claims = []
    for item in items:
        encoded = orjson.dumps(item.result).decode()
        claims.append((item.key, item.job_id, encoded, item.ttl_s))
        finished = to_us(item.finished_at)
        succeeded.append((encoded, finished, finished, item.job_id, *_STARTABLE))
    finish(db, claims)
    db.executemany(_SUCCEEDED, succeeded)
    jobs = _jobs(db, {item.job_id for item in items})
    return [
        found[0]
        if (found := jobs.get(item.job_id)) and found[0].status is JobStatus.SUCCEEDED
        else None
        for item in items
    ]


def claim(db: sqlite3.Connection, key: str, job_id: str, lease_s: float) -> Execution:
    """Claim ``key``'s execution for ``job_id`` (inside the caller's write transaction)."""
    now = now_us()
    until = now + seconds_us(lease_s)
    if db.execute(CLAIM_EXECUTION, (key, job_id, until, until, now)).fetchall():
        return Execution(ExecutionState.NEW, job_id)
    # The upsert found a live claim, and our write lock keeps it there.
    ((held_job, state, result),) = db.execute(HELD_EXECUTION, (key,)).fetchall()
    if state == "done":
        return Execution(ExecutionState.DONE, held_job, orjson.loads(result))
    return Execution(ExecutionState.HELD, held_job)


def finish(db: sqlite3.Connection, claims: Sequence[tuple[str, str, str, float]]) -> None:
    """Mark each ``(key, job_id, result JSON, ttl_s)`` claim done while the job holds it; purge expired."""
    now = now_us()
    db.executemany(
        FINISH_EXECUTION,
        [(result, now + seconds_us(ttl_s), key, job_id) for key, job_id, result, ttl_s in claims],
    )
    db.execute(PURGE_EXECUTIONS, (now,))


def _jobs(db: sqlite3.Connection, ids: set[str]) -> dict[str, tuple[JobRecord, int]]:
    """Return the jobs among ``ids`` with their delivery counts."""
    rows = _select_in(db, f"SELECT {', '.join(COLUMNS)}, deliveries FROM jobs", "id", ids)
    return {row[0]: (record(row[:-1]), int(row[-1])) for row in rows}


def _select_in(db: sqlite3.Connection, select: str, column: str, values: set[str]) -> list[Any]:
    """Return the rows of ``select`` whose ``column`` is one of ``values`` (one statement)."""
    if not values:
        return []
    marks = ", ".join("?" * len(values))
    return list(db.execute(f"{select} WHERE {column} IN ({marks})", tuple(values)).fetchall())

"""The SQLite store's run windows: a worker's run ends and starts in one write transaction.

Run on the connection's thread (``SqliteThread``) inside the caller's ``BEGIN IMMEDIATE``
transaction, so the read and the writes that follow see one state of the file and no other
process slips in between. The claim lives on the job's row (``claim_until``, keyed by the job
id); each statement takes every item of a window at once: Python's work per statement is what
a row costs here, far more than SQLite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

from jobstore.model import RunEnd, RunJob, RunStart, RunStarted
from jobstore.run_window import RUN_COLUMNS, STATUSES, Row, plan_window
from jobstore.sqlite_rows import now_us, seconds_us, to_us

# Only what a worker needs: the message carries the rest, and decoding it would cost every job
# for nothing.
_READ = f"SELECT {', '.join(RUN_COLUMNS)}, deliveries, claim_until FROM jobs"
_START = (
    "UPDATE jobs SET status = 'running', attempts = ?, started_at = ?, updated_at = ?,"
    " deliveries = deliveries + 1, claim_until = ? WHERE id = ?"
)
_END = (
    "UPDATE jobs SET status = COALESCE(?, status), result = COALESCE(?, result),"
    " last_error = COALESCE(?, last_error), finished_at = COALESCE(?, finished_at),"
    " updated_at = ?, claim_until = NULL WHERE id = ?"
)


def run_window(
    db: sqlite3.Connection, ends: Sequence[RunEnd], starts: Sequence[RunStart]
) -> tuple[list[RunJob | None], list[RunStarted]]:
    """End and start runs (see ``JobStore.run_window``) in the caller's write transaction."""
    now = now_us()
    ids = {item.job_id for item in ends} | {item.job_id for item in starts}
    rows: dict[str, Row] = {}
    if ids:
        marks = ", ".join("?" * len(ids))
        for key, kind, status, attempts, error, tenant, url, deliveries, claim in db.execute(
            f"{_READ} WHERE id IN ({marks})", tuple(ids)
        ):
            job = RunJob(key, kind, STATUSES[status], attempts, error, tenant, url)
            rows[key] = Row(job, deliveries, claim is not None and claim > now)
    plan = plan_window(rows, ends, starts)
    if plan.ends:
        db.executemany(_END, [_end_values(end) for end in plan.ends])
    if plan.starts:
        db.executemany(
            _START,
            [
                (
                    s.attempt,
                    to_us(s.started_at),
                    to_us(s.started_at),
                    now + seconds_us(s.lease_s),
                    s.job_id,
                )
                for s in plan.starts
            ],
        )
    return plan.ended, plan.started


def _end_values(end: RunEnd) -> tuple[object, ...]:
    at = to_us(end.at)
    return (
        None if end.status is None else end.status.value,
        None if end.result is None else orjson.dumps(end.result).decode(),
        end.error,
        at if end.status is not None and end.status.terminal else None,
        at,
        end.job_id,
    )

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

from jobstore.model import JobRecord, RunEnd, RunStart, RunStarted
from jobstore.run_window import Row, plan_window
from jobstore.sqlite_rows import COLUMNS, now_us, record, seconds_us, to_us

# The payload stays out of what a window reads: the message carries it, and decoding it
# would cost every job a JSON parse for nothing.
_READ = ", ".join("NULL" if name == "payload" else name for name in COLUMNS)
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
) -> tuple[list[JobRecord | None], list[RunStarted]]:
    """End and start runs (see ``JobStore.run_window``) in the caller's write transaction."""
    now = now_us()
    ids = {item.job_id for item in ends} | {item.job_id for item in starts}
    rows: dict[str, Row] = {}
    if ids:
        marks = ", ".join("?" * len(ids))
        for row in db.execute(
            f"SELECT {_READ}, deliveries, claim_until FROM jobs WHERE id IN ({marks})",
            tuple(ids),
        ):
            held = row[-1] is not None and row[-1] > now
            rows[row[0]] = Row(record(row[:-2]), int(row[-2]), held)
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

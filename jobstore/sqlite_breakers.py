"""The ``breakers`` table in SQLite: the SQL and row conversions behind ``SqliteJobStore``'s breaker methods."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jobstore.model import BreakerRecord
from jobstore.sqlite_rows import to_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = "group_name, dependency, worker, state, failures, changed_at"
_UPSERT = (
    f"INSERT INTO breakers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (group_name, dependency, worker) DO UPDATE"
    " SET state = excluded.state, failures = excluded.failures, changed_at = excluded.changed_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM breakers"
_ORDER = " ORDER BY group_name, dependency, worker"


def upsert(db: sqlite3.Connection, breaker: BreakerRecord) -> None:
    """Insert or replace ``breaker``'s row (one statement, atomic on its own).

    Raises:
        ValueError: ``changed_at`` is naive.
    """
    values = (
        breaker.group,
        breaker.dependency,
        breaker.worker,
        breaker.state,
        breaker.failures,
        to_us(breaker.changed_at),
    )
    db.execute(_UPSERT, values)


def select(db: sqlite3.Connection, group: str | None) -> list[BreakerRecord]:
    """Return the rows, of ``group`` only when given, ordered by group, dependency and worker."""
    if group is None:
        rows: Iterable[Sequence[Any]] = db.execute(f"{_SELECT}{_ORDER}").fetchall()
    else:
        rows = db.execute(f"{_SELECT} WHERE group_name = ?{_ORDER}", (group,)).fetchall()
    return [_record(row) for row in rows]


def delete_worker(db: sqlite3.Connection, worker: str) -> None:
    """Delete every row of ``worker``."""
    db.execute("DELETE FROM breakers WHERE worker = ?", (worker,))


def _record(row: Sequence[Any]) -> BreakerRecord:
    group, dependency, worker, state, failures, changed_us = row
    changed_at = _EPOCH + timedelta(microseconds=changed_us)
    return BreakerRecord(group, dependency, worker, state, int(failures), changed_at)

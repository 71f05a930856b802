"""The ``breakers`` table in PostgreSQL: the SQL behind ``PostgresJobStore``'s breaker methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from jobstore.model import BreakerRecord

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = PoolConnectionProxy[asyncpg.Record]

_COLUMNS = "group_name, dependency, worker, state, failures, changed_at"
_UPSERT = f"""
INSERT INTO breakers ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (group_name, dependency, worker) DO UPDATE
SET state = excluded.state, failures = excluded.failures, changed_at = excluded.changed_at
"""
_SELECT = f"SELECT {_COLUMNS} FROM breakers"
_ORDER = " ORDER BY group_name, dependency, worker"


async def upsert(conn: Connection, breaker: BreakerRecord) -> None:
    """Insert or replace ``breaker``'s row (one statement, atomic on its own).

    Raises:
        ValueError: ``changed_at`` is naive (asyncpg would read it as local time).
    """
    if breaker.changed_at.utcoffset() is None:
        raise ValueError(
            f"job store times must be timezone-aware, got naive {breaker.changed_at.isoformat()}"
        )
    await conn.execute(
        _UPSERT,
        breaker.group,
        breaker.dependency,
        breaker.worker,
        breaker.state,
        breaker.failures,
        breaker.changed_at,
    )


async def select(conn: Connection, group: str | None) -> list[BreakerRecord]:
    """Return the rows, of ``group`` only when given, ordered by group, dependency and worker."""
    if group is None:
        rows = await conn.fetch(f"{_SELECT}{_ORDER}")
    else:
        rows = await conn.fetch(f"{_SELECT} WHERE group_name = $1{_ORDER}", group)
    return [BreakerRecord(*row.values()) for row in rows]


async def delete_worker(conn: Connection, worker: str) -> None:
    """Delete every row of ``worker``."""
    await conn.execute("DELETE FROM breakers WHERE worker = $1", worker)

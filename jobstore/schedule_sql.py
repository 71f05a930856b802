"""The schedule SQL both stores share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobstore.model import ScheduleState
from jobstore.shared_sql import SharedSql, many, marks, statements

_COLUMNS = "name, since, updated_at, last_due, last_job_id, paused_at"
_START = (
    "INSERT INTO schedules (name, since, updated_at) VALUES ($1, $2, $2)"
    " ON CONFLICT (name) DO NOTHING"
)


class ScheduleSql(SharedSql):
    """Schedules' memory over the store's ``_fetch`` and ``_talk``."""

    async def schedule_states(self, names: Sequence[str], at: datetime) -> dict[str, ScheduleState]:
        """Return the state of each named schedule, counting those never seen from ``at``."""
        if not names:
            return {}
        await self._talk(statements(many(_START, [(name, self._time_in(at)) for name in names])))
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM schedules WHERE name IN ({marks(len(names))})", *names
        )
        return {row[0]: self._schedule(row) for row in rows}

    async def record_fired(self, name: str, due: datetime, job_id: str, at: datetime) -> None:
        """Record that ``name``'s occurrence at ``due`` made ``job_id`` (never moving back in time)."""
        await self._fetch(
            "UPDATE schedules SET last_due = $2, last_job_id = $3, updated_at = $4"
            " WHERE name = $1 AND (last_due IS NULL OR last_due < $2)",
            name,
            self._time_in(due),
            job_id,
            self._time_in(at),
        )

    async def pause_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Pause ``name`` from ``at`` (pausing a paused schedule keeps the first time)."""
        return await self._upsert(
            name, at, "$2", "coalesce(schedules.paused_at, excluded.paused_at)"
        )

    async def resume_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Resume ``name``: counting starts again at ``at``, so the paused span never fires."""
        since = "CASE WHEN schedules.paused_at IS NULL THEN schedules.since ELSE excluded.since END"
        return await self._upsert(name, at, "NULL", f"NULL, since = {since}")

    async def _upsert(self, name: str, at: datetime, paused: str, paused_now: str) -> ScheduleState:
        """Insert ``name`` as seen at ``at`` (``paused``), or set its ``paused_at`` to ``paused_now``."""
        [row] = await self._fetch(
            f"INSERT INTO schedules (name, since, updated_at, paused_at) VALUES ($1, $2, $2, {paused})"
            " ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at,"
            f" paused_at = {paused_now} RETURNING {_COLUMNS}",
            name,
            self._time_in(at),
        )
        return self._schedule(row)

    def _schedule(self, row: Sequence[Any]) -> ScheduleState:
        return ScheduleState(**self._decoded(_COLUMNS.split(", "), row))

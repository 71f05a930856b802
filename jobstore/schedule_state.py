"""What the job store remembers of each schedule, and the ``ScheduleStore`` port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule's memory: where counting starts, its last occurrence fired, whether it is paused."""

    name: str
    since: datetime  # occurrences at or before this never fire (first seen, or last resumed)
    updated_at: datetime
    last_due: datetime | None = None  # the due time of the last occurrence fired
    last_job_id: str | None = None  # the job that occurrence made
    paused_at: datetime | None = None

    def fires_after(self) -> datetime:
        """Return the time after which occurrences may still fire."""
        return self.since if self.last_due is None else max(self.since, self.last_due)


class ScheduleStore(Protocol):
    """Schedules' memory; every method is atomic on its own."""

    async def schedule_states(self, names: Sequence[str], at: datetime) -> dict[str, ScheduleState]:
        """Return the state of each named schedule, counting those never seen from ``at``."""

    async def record_fired(self, name: str, due: datetime, job_id: str, at: datetime) -> None:
        """Record that ``name``'s occurrence at ``due`` made ``job_id`` (never moving back in time)."""

    async def pause_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Pause ``name`` from ``at`` (pausing a paused schedule keeps the first time)."""

    async def resume_schedule(self, name: str, at: datetime) -> ScheduleState:
        """Resume ``name``: occurrences that fell due while it was paused never fire."""

"""The four job priorities and their AMQP levels."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """The four job priorities, lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def level(self) -> int:
        """Return the AMQP priority (0 = low … 3 = urgent)."""
        return _PRIORITY_LEVELS[self]


_PRIORITY_LEVELS = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.URGENT: 3}
MAX_PRIORITY = 3

"""What this process's webhook receiver did lately: each source's latest deliveries and its counts."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from starlette.responses import Response

KEPT = 50  # deliveries remembered per source


@dataclass(frozen=True, slots=True)
class DeliveryNote:
    """One delivery as the receiver answered it."""

    at: datetime
    result: str  # accepted, replayed (a duplicate, suppressed), rejected_signature, malformed, ...
    status: int
    detail: str  # why it was refused; empty when accepted
    job_id: str | None = None
    delivery_id: str | None = None

    @classmethod
    def of(cls, result: str, response: Response) -> DeliveryNote:
        """Return the note of a delivery from the receiver's JSON answer (a job, or a problem)."""
        answer = orjson.loads(bytes(response.body))
        return cls(
            datetime.now(UTC),
            result,
            response.status_code,
            answer.get("detail", ""),
            answer.get("id"),
            answer.get("delivery_id"),
        )


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    """The latest deliveries of each source, and how many ended how, since the process started."""

    _latest: dict[str, deque[DeliveryNote]] = field(default_factory=dict)
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, source: str, note: DeliveryNote) -> None:
        """Remember one delivery of ``source`` (a configured source: the names are few)."""
        self._latest.setdefault(source, deque(maxlen=KEPT)).appendleft(note)
        self._counts[(source, note.result)] += 1

    def latest(self, source: str) -> list[DeliveryNote]:
        """Return the source's latest deliveries, newest first."""
        return list(self._latest.get(source, ()))

    def counts(self, source: str) -> dict[str, int]:
        """Return how many of the source's deliveries ended with each result."""
        return {result: n for (name, result), n in sorted(self._counts.items()) if name == source}

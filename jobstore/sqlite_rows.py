"""How ``SqliteJobStore`` stores values: job rows, JSON text and integer-microsecond times.

Times are integer microseconds since the Unix epoch, UTC (exact round trips, plain integer
comparisons); JSON columns hold orjson text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import orjson

from jobstore.model import JobRecord, JobStatus
from topology.priority import Priority

COLUMNS = tuple(JobRecord.__dataclass_fields__)
_TIMES = frozenset({"created_at", "updated_at", "not_before", "started_at", "finished_at"})
_JSON = frozenset({"payload", "payload_ref", "result"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def job_values(job: JobRecord) -> tuple[Any, ...]:
    """Return ``job``'s column values in ``COLUMNS`` order, as SQLite stores them."""
    return tuple(encode(name, getattr(job, name)) for name in COLUMNS)


def encode(column: str, value: Any) -> Any:
    """Return ``value`` as the jobs table's ``column`` stores it."""
    if value is None:
        return None
    if column in _TIMES:
        return to_us(value)
    if column in _JSON:
        return orjson.dumps(value).decode()
    return value.value if isinstance(value, Enum) else value


def record(row: Sequence[Any]) -> JobRecord:
    """Return the ``JobRecord`` a jobs row (selected in ``COLUMNS`` order) holds."""
    values = dict(zip(COLUMNS, row, strict=True))
    for column in _TIMES:
        if values[column] is not None:
            values[column] = from_us(values[column])
    for column in _JSON:
        if values[column] is not None:
            values[column] = orjson.loads(values[column])
    values["status"] = JobStatus(values["status"])
    values["priority"] = Priority(values["priority"])
    return JobRecord(**values)


def to_us(when: datetime) -> int:
    """Return microseconds since the epoch; integer arithmetic keeps the round trip exact."""
    if when.utcoffset() is None:
        raise ValueError(f"job store times must be timezone-aware, got naive {when.isoformat()}")
    return (when - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    """Return the time ``us`` microseconds after the epoch."""
    return _EPOCH + us * _MICROSECOND


def seconds_us(seconds: float) -> int:
    """Return ``seconds`` in whole microseconds."""
    return round(seconds * 1_000_000)


def now_us() -> int:
    """Return the wall clock in microseconds since the epoch."""
    return time.time_ns() // 1000

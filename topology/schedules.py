"""Schedules of the topology file: recurring jobs on a cron expression or a fixed interval, and when each falls due."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, JsonValue, field_validator, model_validator

from topology import limits
from topology.durations import Duration, format_duration
from topology.names import DEFAULT_TENANT, Priority

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Misfire(StrEnum):
    """What happens to occurrences that fell due while no scheduler ran (past their ``grace``)."""

    ONCE = "once"  # the latest missed occurrence runs, the others are dropped
    ALL = "all"  # every missed occurrence runs, oldest first
    SKIP = "skip"  # none runs; the schedule resumes with its next occurrence


class ScheduleSpec(BaseModel):
    """One ``schedules:`` entry: when it falls due, and the job each occurrence submits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: Annotated[str, limits.checked(partial(limits.job_type_problem, allow_wildcards=False))]
    cron: str | None = None  # five fields (or six, seconds first), read in ``timezone``
    every: Duration | None = None  # a fixed interval, counted from the Unix epoch
    timezone: str = "UTC"
    payload: Annotated[
        JsonValue, limits.checked(lambda p: limits.payload_problem(orjson.dumps(p)))
    ] = None
    priority: Priority = Priority.MEDIUM
    max_attempts: limits.Attempts | None = None
    misfire: Misfire = Misfire.ONCE
    # An occurrence this late or less is on time and fires whatever the misfire policy.
    grace: Duration = 60_000
    tenant: Annotated[str, limits.checked(limits.tenant_problem)] = DEFAULT_TENANT

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {limits.excerpt(zone)}; use an IANA name such as "
                "Europe/Paris or UTC"
            ) from None
        return zone

    @field_validator("every")
    @classmethod
    def _a_second_at_least(cls, every: int | None) -> int | None:
        if every is not None and (every < 1000 or every % 1000):
            raise ValueError(f"every {format_duration(every)} must be whole seconds, 1s or more")
        return every

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give either cron (e.g. '0 3 * * *') or every (e.g. 30s), not both")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(self.zone))
            except CronSimError as exc:
                raise ValueError(f"cron {self.cron!r} is not a cron expression: {exc}") from None
        return self

    def __hash__(self) -> int:
        # The payload is any JSON (a dict is unhashable): the spec is hashed as its canonical JSON.
        return hash(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))

    @property
    def zone(self) -> ZoneInfo:
        """Return the time zone the cron expression is read in."""
        return ZoneInfo(self.timezone)

    def rule(self) -> str:
        """Return the rule as the file says it: the cron expression and its zone, or the interval."""
        if self.cron is not None:
            return f"{self.cron} ({self.timezone})"
        return f"every {format_duration(self.every or 0)}"

    def after(self, moment: datetime) -> Iterator[datetime]:
        """Yield the occurrences strictly after ``moment``, in UTC, oldest first (without end)."""
        if self.every is not None:
            step = timedelta(milliseconds=self.every)
            # Counted from the epoch, so every replica and every restart agrees on them.
            due = _EPOCH + ((moment - _EPOCH) // step + 1) * step
            while True:
                yield due
                due += step
        assert self.cron is not None  # the validator made sure of one of the two
        for due in CronSim(self.cron, moment.astimezone(self.zone)):
            if due.astimezone(UTC) > moment:
                yield due.astimezone(UTC)

    def next_after(self, moment: datetime) -> datetime:
        """Return the first occurrence strictly after ``moment``, in UTC."""
        return next(self.after(moment))


def due_between(
    spec: ScheduleSpec, since: datetime, now: datetime, *, limit: int = 1000
) -> list[datetime]:
    """Return the occurrences in ``(since, now]`` that fire now, by the schedule's misfire policy."""
    grace = timedelta(milliseconds=spec.grace)
    if spec.every is not None:
        # Only the newest ``limit`` missed occurrences can fire: start just before them.
        since = max(since, now - grace - timedelta(milliseconds=spec.every) * (limit + 1))
    missed: list[datetime] = []
    on_time: list[datetime] = []
    for due in spec.after(since):
        if due > now:
            break
        (on_time if now - due <= grace else missed).append(due)
        if len(missed) > limit:
            missed.pop(0)  # only the newest missed occurrences can still fire
    if spec.misfire is Misfire.ALL:
        fired = missed + on_time
    elif spec.misfire is Misfire.ONCE and not on_time:
        fired = missed[-1:]
    else:
        fired = on_time
    return fired[-limit:]


def occurrence_key(name: str, due: datetime) -> str:
    """Return the idempotency key of ``name``'s occurrence at ``due``: one job per occurrence, whoever fires it."""
    return f"{name}@{due.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"

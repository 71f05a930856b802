"""The scheduler: whichever replica leads submits each schedule's occurrences as they fall due, each once."""

# An occurrence's job is keyed ``<schedule>@<due time>`` where no client can reach: firing it
# twice only finds the first job (docs/schedules-and-workflows.md).

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger

from jobstore.model import ScheduleState
from producers.leadership import Leadership
from producers.metrics import SchedulerMetrics
from producers.submit import JobRequest, Submitter
from topology.errors import IdempotencyInFlightError, TaskqError
from topology.names import SCHEDULE_SOURCE
from topology.schedules import ScheduleSpec, due_between, occurrence_key

MAX_NAP_S = 1.0  # the longest the loop sleeps: a change of leadership or a pause shows within it


@dataclass(frozen=True, slots=True)
class Clock:
    """The scheduler's time: what now is, and how to wait (a test may run it faster than the wall clock)."""

    now: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]


SYSTEM_CLOCK = Clock(lambda: datetime.now(UTC), asyncio.sleep)


class Scheduler:
    """Fires the topology's schedules while ``leadership`` says this replica leads."""

    def __init__(
        self,
        submitter: Submitter,
        leadership: Leadership,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self._submitter = submitter
        self._store = submitter.store
        self._schedules = submitter.topology.schedules
        self._leadership = leadership
        self._clock = clock
        self._metrics = metrics or SchedulerMetrics()

    async def run(self, stop: asyncio.Event) -> None:
        """Fire what falls due until ``stop`` is set (a failed round is logged and tried again)."""
        while not stop.is_set():
            leading = self._leadership.leading()
            self._metrics.leader.set(1 if leading else 0)
            nap = MAX_NAP_S
            if leading:
                try:
                    nap = min(nap, await self.fire_due())
                except TaskqError as exc:  # the store or the broker is down: try again soon
                    logger.warning("schedules not fired this round: {}", exc)
                except Exception as exc:  # a bug must not end the scheduler for the process's life
                    logger.opt(exception=exc).error("schedules not fired this round")
            if nap > 0:
                napping = asyncio.ensure_future(self._clock.sleep(nap))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({napping, stopping}, return_when=asyncio.FIRST_COMPLETED)
                napping.cancel()
                stopping.cancel()
        self._metrics.leader.set(0)

    async def fire_due(self) -> float:
        """Fire every occurrence due now; return the seconds until the next one (of the clock's)."""
        now = self._clock.now()
        states = await self._store.schedule_states([name for name, _ in self._schedules], now)
        nearest = MAX_NAP_S
        for name, spec in self._schedules:
            state = states[name]
            if state.paused_at is not None:
                self._metrics.next_run.labels(name).set(0)
                continue
            last = await self._fire(name, spec, state, now)
            upcoming = spec.next_after(max(last, now))
            self._metrics.next_run.labels(name).set(upcoming.timestamp())
            nearest = min(nearest, (upcoming - self._clock.now()).total_seconds())
        return max(nearest, 0.0)

    async def _fire(
        self, name: str, spec: ScheduleSpec, state: ScheduleState, now: datetime
    ) -> datetime:
        """Fire ``name``'s occurrences due at ``now`` in order; return the due time of the last one fired."""
        last = state.fires_after()
        for due in due_between(spec, last, now):
            if not self._leadership.leading():
                break  # another replica leads now: it resumes after what is recorded
            request = JobRequest(
                type=spec.job,
                payload=spec.payload,
                priority=spec.priority,
                max_attempts=spec.max_attempts,
                idempotency_key=occurrence_key(name, due),
                correlation_id=f"schedule:{name}",
                source=SCHEDULE_SOURCE,
                tenant=spec.tenant,
            )
            try:
                done = await self._submitter.submit(request)
            except IdempotencyInFlightError:
                # Another replica is submitting it right now: it records it, or its lease lapses
                # and this one takes the occurrence over on a later round.
                self._metrics.runs.labels(name, "replayed").inc()
                break
            except TaskqError as exc:
                self._metrics.runs.labels(name, "failed").inc()
                logger.warning("schedule {} not fired for {}: {}", name, due.isoformat(), exc)
                break
            await self._store.record_fired(name, due, done.job_id, self._clock.now())
            self._metrics.runs.labels(name, "replayed" if done.replayed else "fired").inc()
            self._metrics.last_run.labels(name).set(due.timestamp())
            last = due
        return last

"""Circuit breakers per dependency, and the report that makes them visible in metrics and the store."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from enum import StrEnum

from loguru import logger

from consumers.metrics import WorkerMetrics
from jobstore.model import BreakerRecord, JobStore
from producers.submit import utc_now
from topology.errors import TaskqError

Clock = Callable[[], float]
OnChange = Callable[["CircuitBreaker"], None]


class BreakerState(StrEnum):
    """Where a breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """One dependency's breaker (per worker process)."""

    name: str
    threshold: int = 5
    cooldown: float = 30.0
    clock: Clock = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    on_change: OnChange | None = None

    def allow(self) -> bool:
        """Return whether a job needing the dependency may run now (one probe when half-open)."""
        if self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.cooldown:
            self.probing = False
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Return the seconds until the breaker lets a probe through (0 when it would now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def skip_probe(self) -> None:
        """Forget a granted probe that did not run, so the next job may probe instead."""
        self.probing = False

    def succeeded(self) -> None:
        """Record a success: the dependency works, so the breaker closes."""
        self.failures = 0
        self.probing = False
        self._move(BreakerState.CLOSED)

    def failed(self) -> None:
        """Record a failure: a failed probe, or the threshold reached, opens the breaker."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.probing = False
            self._move(BreakerState.OPEN)

    def _move(self, to: BreakerState) -> None:
        """Enter state ``to``, telling ``on_change`` when that is a change."""
        # The fields are set before the callback runs, so it sees the breaker as it now is;
        # staying put (a failure while open, a success while closed) is no transition.
        if to is self.state:
            return
        self.state = to
        if self.on_change is not None:
            self.on_change(self)


@dataclass(slots=True)
class Breakers:
    """The breakers of one worker, created on first use per dependency name."""

    threshold: int = 5
    cooldown: float = 30.0
    clock: Clock = time.monotonic
    by_name: dict[str, CircuitBreaker] = field(default_factory=dict)
    on_change: OnChange | None = None

    def get(self, name: str) -> CircuitBreaker:
        """Return the breaker of dependency ``name``."""
        if name not in self.by_name:
            self.by_name[name] = CircuitBreaker(
                name, self.threshold, self.cooldown, self.clock, on_change=self.on_change
            )
        return self.by_name[name]

    def blocking(self, names: tuple[str, ...]) -> CircuitBreaker | None:
        """Return the first breaker among ``names`` that refuses a job now, or ``None``."""
        return next((b for name in names if not (b := self.get(name)).allow()), None)


STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""What ``taskq_breaker_state`` reads for each state."""


@dataclass(slots=True, eq=False)
class BreakerReport:
    """Reports one worker's breaker transitions for one consumer group (``changed`` is the callback)."""

    store: JobStore
    group: str
    _: KW_ONLY
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # host:pid
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    clock: Callable[[], datetime] = utc_now
    _pending: dict[str, BreakerRecord] = field(default_factory=dict, init=False)
    _writer: asyncio.Task[None] | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def changed(self, breaker: CircuitBreaker) -> None:
        """Set the metrics to ``breaker``'s new state and queue its row (needs a running loop)."""
        labels = (self.group, breaker.name)
        self.metrics.breaker_state.labels(*labels).set(STATE_VALUES[breaker.state])
        self.metrics.breaker_transitions.labels(*labels, breaker.state.value).inc()
        if self._closed:
            return  # the worker is stopping and its rows are gone: nothing to bring back
        self._pending[breaker.name] = BreakerRecord(
            *labels, self.worker, breaker.state.value, breaker.failures, self.clock()
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def flush(self) -> None:
        """Wait until every queued row has been written (or its failure logged)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        """Stop recording, let queued rows land, then delete this worker's rows."""
        self._closed = True
        await self.flush()
        try:
            await self.store.forget_breakers(self.worker)
        except TaskqError as exc:
            logger.warning("breaker rows of worker {} not deleted: {}", self.worker, exc)

    async def _write(self) -> None:
        # One writer, oldest dependency first, and only the latest state of each: rows land in
        # order, and a store slower than the transitions (or down) holds one row per dependency.
        while self._pending:
            name = next(iter(self._pending))
            record = self._pending.pop(name)
            try:
                await self.store.record_breaker(record)
            except TaskqError as exc:
                what = (name, self.group, record.state)
                logger.warning("breaker {} of group {} not recorded as {}: {}", *what, exc)

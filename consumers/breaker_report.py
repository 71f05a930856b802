"""Make a worker's circuit breakers visible: Prometheus metrics, and rows in the job store.

The report hears every transition through ``Breakers.on_change``. It sets the metrics at
once and leaves the store write to a background task, so a slow or failing store never
delays or fails a job; a failed write is logged and the next transition writes again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from loguru import logger
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from consumers.breaker import BreakerState, CircuitBreaker
from jobstore.model import BreakerRecord, JobStore
from topology.errors import TaskqError

STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""What ``taskq_breaker_state`` reads for each state."""


class BreakerMetrics:
    """The breaker gauge and transition counter, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Labels are topology group names and handlers' declared dependency names: bounded.
        self.state = Gauge(
            "taskq_breaker_state",
            "A dependency's circuit breaker in this worker: 0 closed, 1 half-open, 2 open.",
            ["group", "dependency"],
            registry=registry,
        )
        self.transitions = Counter(
            "taskq_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            ["group", "dependency", "to"],
            registry=registry,
        )


PROCESS_METRICS = BreakerMetrics(REGISTRY)
"""The metrics on prometheus_client's default registry, the one its exporters serve."""


def worker_identity() -> str:
    """Return this worker process's name in breaker rows: ``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class BreakerReport:
    """Reports one worker's breaker transitions for one consumer group (``changed`` is the callback)."""

    def __init__(
        self,
        store: JobStore,
        group: str,
        *,
        worker: str | None = None,
        metrics: BreakerMetrics = PROCESS_METRICS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.worker = worker or worker_identity()
        self._store = store
        self._group = group
        self._metrics = metrics
        self._clock = clock
        self._pending: dict[str, BreakerRecord] = {}
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def changed(self, breaker: CircuitBreaker) -> None:
        """Set the metrics to ``breaker``'s new state and queue its row (needs a running loop)."""
        self._metrics.state.labels(self._group, breaker.name).set(STATE_VALUES[breaker.state])
        self._metrics.transitions.labels(self._group, breaker.name, breaker.state.value).inc()
        if self._closed:
            return  # the worker is stopping and its rows are gone: nothing to bring back
        self._pending[breaker.name] = BreakerRecord(
            self._group,
            breaker.name,
            self.worker,
            breaker.state.value,
            breaker.failures,
            self._clock(),
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
            await self._store.forget_breakers(self.worker)
        except TaskqError as exc:
            logger.warning("breaker rows of worker {} not deleted: {}", self.worker, exc)

    async def _write(self) -> None:
        # One writer, oldest dependency first, and only the latest state of each: rows land in
        # order, and a store slower than the transitions (or down) holds one row per dependency.
        while self._pending:
            name = next(iter(self._pending))
            record = self._pending.pop(name)
            try:
                await self._store.record_breaker(record)
            except TaskqError as exc:
                logger.warning(
                    "breaker {} of group {} not recorded as {}: {}",
                    name,
                    self._group,
                    record.state,
                    exc,
                )

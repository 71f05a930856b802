"""The autoscaler: read each group's (and stream source's) signals, decide, tell an actuator; serve its metrics and status."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiohttp import web
from loguru import logger
from prometheus_client import Gauge

from consumers.autoscaler.policy import PolicyConfig, PolicyState, decide
from consumers.autoscaler.signals import (
    QueueSignals,
    SignalReader,
    SignalsUnavailable,
    StreamSignalReader,
    stream_target,
)
from consumers.metrics_server import serve_metrics
from producers.auth.authenticator import Authenticator
from producers.auth.principal import Scope
from telemetry.metrics import MetricSet, counter, gauge
from topology.compiled import CompiledTopology
from topology.errors import TaskqError
from topology.spec import ScaleSpec


class Actuator(Protocol):
    """Runs a number of workers for a group (or readers for ``stream:<source>``): local processes, or a Deployment's replicas."""

    async def current(self, group: str) -> int:
        """Return how many workers the group has now."""

    async def scale(self, group: str, workers: int) -> None:
        """Make the group run ``workers`` workers (scale-down lets workers drain)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One thing the autoscaler scales: a group's workers, or a stream source's readers."""

    name: str  # the actuator's key, and its status's and metrics' label
    scale: ScaleSpec
    read: Callable[[], Awaitable[QueueSignals]]
    # A stream's readers are counted by the actuator: Redis keeps a reader's name after it exits.
    readers: bool = False


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """What the autoscaler last saw and decided for one group or stream source (``taskctl scale`` shows it)."""

    group: str
    current: int
    desired: int
    reason: str
    # The last reading: ready + unacked, then QueueSignals' own fields (None: not read).
    backlog: int | None = None
    publish_rate: float | None = None
    ack_rate: float | None = None
    oldest_age: float | None = None
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    error: str | None = None  # the management API's or the actuator's failure, if any
    decided_at: float = 0.0


HISTORY = 50
"""How many scaling changes ``/status`` lists (the latest; older ones are in the logs)."""


@dataclass(frozen=True, slots=True)
class ScalingChange:
    """One time the autoscaler asked a group for another number of workers."""

    at: float  # wall time, seconds since the epoch
    group: str
    current: int  # the workers it had
    desired: int  # the workers it asked for
    reason: str
    error: str | None = None  # the actuator's failure: the change did not happen


class AutoscalerMetrics(MetricSet):
    """Gauges and counters of one autoscaler (served by its status server)."""

    # Label values are topology group names (and delay tier names): bounded sets.
    current = gauge("taskq_autoscaler_current_workers", "Workers a group runs now.", "group")
    desired = gauge(
        "taskq_autoscaler_desired_workers", "Workers the policy wants for a group.", "group"
    )
    backlog = gauge(
        "taskq_autoscaler_backlog_messages",
        "Ready plus unacknowledged messages in a group's work queues.",
        "group",
    )
    ack_rate = gauge(
        "taskq_autoscaler_ack_rate", "Messages acked per second in a group's work queues.", "group"
    )
    decisions = counter(
        "taskq_autoscaler_decisions_total", "Scale actions taken, by direction.", "group direction"
    )
    management_errors = counter(
        "taskq_autoscaler_management_api_errors_total",
        "Failed reads of a group's signals from the RabbitMQ management API.",
        "group",
    )
    redis_errors = counter(
        "taskq_autoscaler_redis_errors_total",
        "Failed reads of a stream source's backlog from Redis (group: stream:<source>).",
        "group",
    )
    held = gauge(
        "taskq_autoscaler_holding",
        "1 while a group's last decision is held because its signals could not be read.",
        "group",
    )
    # What on-call watches besides the scaling: the queues around the work queues.
    queue_messages = gauge(
        "taskq_queue_messages",
        "Messages in a group's queues: ready and unacked work, and its dead-letter queue.",
        "group kind",
    )
    queue_limit = gauge(
        "taskq_queue_max_messages",
        "The most messages a group's queue takes before it refuses more: its DLQ's dlq.max_length.",
        "group kind",
    )
    queue_consumers = gauge("taskq_queue_consumers", "Consumers on a group's work queue.", "group")
    oldest_age = gauge(
        "taskq_queue_oldest_message_age_seconds",
        "Age of the oldest ready message of a group, where the broker exposes it.",
        "group",
    )
    tier_messages = gauge(
        "taskq_retry_tier_messages",
        "Messages waiting in a delay tier (retries and delayed jobs).",
        "tier",
    )

    def observe(self, status: GroupStatus) -> None:
        """Set the gauges from one group's latest status."""
        group = status.group
        self.current.labels(group).set(status.current)
        self.desired.labels(group).set(status.desired)
        self.held.labels(group).set(1 if status.error else 0)
        if status.backlog is not None:
            self.backlog.labels(group).set(status.backlog)
        if status.ack_rate is not None:
            self.ack_rate.labels(group).set(status.ack_rate)
        if status.ready is not None and status.unacked is not None:
            self.queue_messages.labels(group, "ready").set(status.ready)
            self.queue_messages.labels(group, "unacked").set(status.unacked)
        if status.consumers is not None:
            self.queue_consumers.labels(group).set(status.consumers)
        if status.oldest_age is not None:
            self.oldest_age.labels(group).set(status.oldest_age)
        elif status.ready is not None:  # read fine and nothing waiting: no old job to alert on
            self.oldest_age.labels(group).set(0)


class Autoscaler:
    """Polls every scaled group (and stream source) each ``interval`` seconds and scales it through ``actuator``."""

    def __init__(
        self,
        topology: CompiledTopology,
        reader: SignalReader,
        actuator: Actuator,
        *,
        groups: Sequence[str] | None = None,
        streams: StreamSignalReader | None = None,
        interval: float = 5.0,
        metrics: AutoscalerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Scale ``groups`` (default: all), and every stream source's readers if ``streams`` reads their backlog."""
        self._groups = [g for g in topology.groups if groups is None or g.name in groups]
        self._reader = reader
        self._actuator = actuator
        self._interval = interval
        self._metrics = metrics or AutoscalerMetrics()
        self._clock = clock  # the policy's windows: monotonic; decided_at stays wall time
        self._targets = [
            Target(g.name, g.spec.scale, functools.partial(reader.read, g)) for g in self._groups
        ]
        if streams is not None:
            self._targets += [
                Target(stream_target(name), spec.scale, functools.partial(streams.read, spec), True)
                for name, spec in topology.streams
            ]
        self._states = {t.name: PolicyState() for t in self._targets}
        self._tiers = topology.tiers
        self.status: dict[str, GroupStatus] = {}
        self.history: deque[ScalingChange] = deque(maxlen=HISTORY)  # oldest first

    async def step(self) -> list[GroupStatus]:
        """Poll, decide and actuate every group and stream source once, then read the DLQs and delay tiers for the metrics; return what was decided."""
        decided = [await self._step(target) for target in self._targets]
        metrics = self._metrics
        # (queue, gauge, labels): a series appears only once its queue was read. They never
        # count as work.
        gauges: list[tuple[str, Gauge, tuple[str, ...]]] = [
            (g.dead_letter_queue, metrics.queue_messages, (g.name, "dlq")) for g in self._groups
        ]
        gauges += [(tier.queue, metrics.tier_messages, (tier.label,)) for tier in self._tiers]
        for group in self._groups:  # beside the depth, so an alert can tell how full it is
            metrics.queue_limit.labels(group.name, "dlq").set(group.spec.dlq.max_length)
        failed: list[str] = []
        for queue, series, labels in gauges:
            try:
                series.labels(*labels).set(await self._reader.depth(queue))
            except SignalsUnavailable as exc:
                failed.append(queue)
                if exc.status is None:  # unreachable or hanging: the others would be too
                    break
        if failed:
            logger.warning("autoscaler: depths not read for {}", ", ".join(failed))
        return decided

    async def run(self, stop: asyncio.Event) -> None:
        """Step every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def _step(self, target: Target) -> GroupStatus:
        name, now, metrics = target.name, self._clock(), self._metrics
        kind, source, errors = (
            ("source", "Redis", metrics.redis_errors)
            if target.readers
            else ("group", "management API", metrics.management_errors)
        )
        signals: QueueSignals | None = None
        error = None
        try:
            signals = await target.read()
        except SignalsUnavailable as exc:
            error = f"{source}: {exc}"
            errors.labels(name).inc()
            logger.warning("autoscaler: {} {}: {}; holding the last decision", kind, name, exc)
        try:
            current = await self._actuator.current(name)
        except TaskqError as exc:
            return self._remember(GroupStatus(name, -1, -1, str(exc), error=str(exc)))
        if signals is not None and target.readers:
            signals = replace(signals, consumers=current)
        config, state = PolicyConfig.for_scale(target.scale), self._states[name]
        decision = decide(signals, current, target.scale, config, state, now)
        self._states[name] = decision.state
        what = (name, current, decision.desired, decision.reason)
        if decision.desired != current:
            failure = None
            try:
                await self._actuator.scale(name, decision.desired)
            except TaskqError as exc:
                error = failure = f"actuator: {exc}"
                logger.error("autoscaler: {} {}: scaling failed: {}", kind, name, exc)
            else:
                direction = "up" if decision.desired > current else "down"
                metrics.decisions.labels(name, direction).inc()
                logger.info("autoscaler: {} {} {} -> {}: {}", kind, *what)
            self.history.append(ScalingChange(time.time(), *what, error=failure))
        seen: dict[str, Any] = {}
        if signals is not None:  # every figure of the reading, and the backlog they make
            seen = dataclasses.asdict(signals) | {"backlog": signals.ready + signals.unacked}
        return self._remember(GroupStatus(*what, error=error, decided_at=time.time(), **seen))

    async def serve(self, authenticator: Authenticator, *, host: str, port: int) -> web.AppRunner:
        """Start serving ``/status`` (every group's last decision, and the latest changes) and the metrics; clean up the returned runner to stop."""

        async def status(_: web.Request) -> web.Response:
            groups = [dataclasses.asdict(s) for s in self.status.values()]
            history = [dataclasses.asdict(c) for c in reversed(self.history)]  # newest first
            return web.json_response({"groups": groups, "history": history})

        more = {"/status": (Scope.ADMIN, status)}
        return await serve_metrics(
            authenticator, host=host, port=port, registry=self._metrics.registry, more=more
        )

    def _remember(self, status: GroupStatus) -> GroupStatus:
        self.status[status.group] = status
        self._metrics.observe(status)
        return status

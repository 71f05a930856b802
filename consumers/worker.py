"""The worker: consumes a group's queues and carries out each job's dispatch decision.

Every hop is a confirmed publish followed by the ack of the original (at-least-once, never
zero); effects are guarded by an execution claim in the job store, so a redelivered job
whose effects happened is acked without running again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from loguru import logger
from opentelemetry.trace import SpanKind

from consumers.acks import Acker
from consumers.announce import Announcer
from consumers.breaker import Breakers
from consumers.breaker_report import BreakerReport
from consumers.dispatch import Action, DeadReason, Decision, dead, failed
from consumers.handlers import Handler, HandlerRegistry, JobContext, Permanent
from consumers.metrics import UNKNOWN_TYPE, WorkerMetrics, process_metrics
from consumers.retry import attempts_allowed
from jobstore.blobs import BlobStore
from jobstore.coalesce import Coalescer
from jobstore.model import (
    STARTABLE,
    JobRecord,
    JobStatus,
    JobStore,
    RunFinish,
    RunStart,
    RunStarted,
    StartOutcome,
)
from producers.publisher import Publisher
from producers.submit import Submitter
from telemetry import tracing
from telemetry.logs import job_log_context
from topology.envelope import Envelope, decode
from topology.errors import ContractError, TaskqError, TopologyError
from topology.model import CompiledGroup, CompiledTopology
from topology.routes import delay_route, next_hop
from topology.settings import WorkerSettings

Clock = Callable[[], datetime]
HELD_RETRY_MS = 1000  # another worker holds the job's claim: look again after one tier


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Deps:
    """What a worker works with, injected so tests can pass twins."""

    topology: CompiledTopology
    group: CompiledGroup
    registry: HandlerRegistry
    store: JobStore
    blobs: BlobStore
    publisher: Publisher
    settings: WorkerSettings
    # Enqueues the callbacks of jobs that end (None: no callbacks).
    submitter: Submitter | None = None
    metrics: WorkerMetrics = field(default_factory=process_metrics)


class Worker:
    """Runs one consumer group's jobs: prefetch and concurrency from the topology."""

    def __init__(self, deps: Deps, *, clock: Clock = utc_now) -> None:
        self._deps = deps
        self._clock = clock
        self._slots = asyncio.Semaphore(deps.group.spec.concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._queues: list[tuple[AbstractQueue, str]] = []
        self._acks = Acker()
        self._announcer = Announcer(deps.publisher, running_delay=deps.settings.running_event_delay)
        self._starts: Coalescer[RunStart, RunStarted] = Coalescer(deps.store.start_runs)
        self._finishes: Coalescer[RunFinish, JobRecord | None] = Coalescer(deps.store.finish_runs)
        self.breaker_report = BreakerReport(deps.store, deps.group.name)
        self.breakers = Breakers(
            deps.settings.breaker_threshold,
            deps.settings.breaker_cooldown,
            on_change=self.breaker_report.changed,
        )

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Start consuming every work queue of the group (most urgent lane first)."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._deps.group.spec.prefetch)
        for name in self._deps.group.queue_names:
            # A declared (passive) queue, not get_queue(ensure=False): only declared queues
            # are re-declared and re-consumed by the robust channel after a reconnect.
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                raise TopologyError(
                    f"queue {name} does not exist; run `taskctl topology apply` first"
                ) from exc
            tag = await queue.consume(self._on_message)
            self._queues.append((queue, tag))

    async def stop(self, grace: float | None = None) -> bool:
        """Stop consuming, then wait up to ``grace`` seconds for jobs in flight; True if they all finished."""
        for queue, tag in self._queues:
            await queue.cancel(tag)
        self._queues.clear()
        # Taking no more jobs, the worker's breakers gate nothing: their rows go now.
        await self.breaker_report.close()
        if not self._running:
            await self._settle_up()
            return True
        _, pending = await asyncio.wait(self._running, timeout=grace or self._deps.settings.grace)
        # Unfinished jobs stay unacked: closing the channel returns them to the queue.
        await self._settle_up()
        return not pending

    async def _settle_up(self) -> None:
        """Send the acks and status events still queued."""
        await self._acks.flush()
        await self._announcer.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.received(message)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            async with self._slots:
                await self.handle(message)
        finally:
            if task is not None:
                self._running.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Dispatch one delivery; infrastructure failures requeue it instead of losing it."""
        try:
            await self._dispatch(message)
        except TaskqError as exc:
            logger.warning("job message requeued after an infrastructure failure: {}", exc)
            await asyncio.sleep(0.5)  # do not spin on a store or broker outage
            await self._acks.settle(message, requeue=True)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = decode(message.body)
        except ContractError as exc:
            logger.warning("undecodable message dead-lettered: {}", exc)
            # The work queue dead-letters rejections to the group's DLQ (x-death says why).
            await self._acks.settle(message, requeue=None)
            return
        # Every line logged while the job is handled carries its id, type, group and attempt
        # (and the trace and span ids when tracing is on).
        with job_log_context(
            job_id=envelope.id,
            job_type=envelope.type,
            group=self._deps.group.name,
            attempt=envelope.attempt,
            correlation_id=envelope.correlation_id,
        ):
            await self._traced(envelope, message)

    async def _traced(self, envelope: Envelope, message: AbstractIncomingMessage) -> None:
        """Route the job inside a span continuing the publisher's trace (when tracing is on)."""
        if not tracing.enabled():
            await self._route(envelope, message)
            return
        attributes = {
            "taskq.job_id": envelope.id,
            "taskq.job_type": envelope.type,
            "taskq.attempt": envelope.attempt,
            "taskq.group": self._deps.group.name,
        }
        # A child of the context the publisher put in the headers: one trace per job, across
        # every retry hop (each hop's publish happens inside this span).
        with tracing.span(
            f"{envelope.type} process",
            kind=SpanKind.CONSUMER,
            parent_headers=message.headers,
            attributes=attributes,
        ):
            await self._route(envelope, message)

    async def _route(self, envelope: Envelope, message: AbstractIncomingMessage) -> None:
        """Forward an early job, dead-letter an unknown type, park a blocked one, or run it."""
        deps = self._deps
        hop = next_hop(deps.topology, envelope, self._clock())
        if hop is not None:  # a delayed job early at its queue: on through the next tier
            await deps.publisher.publish(envelope, hop)
            self._acks.ack(message)
            return
        handler = deps.registry.resolve(envelope.type)
        if handler is None:
            error = f"ContractError: no handler is registered for job type {envelope.type!r}"
            decision = dead(
                envelope, DeadReason.CONTRACT, error, group=deps.group.name, topology=deps.topology
            )
            await self._carry_out(envelope, decision, message)
            return
        blocking = self.breakers.blocking(handler.depends_on)
        if blocking is not None:
            # Parked, not failed: the job waits out the cooldown without spending an attempt.
            wait_ms = max(int(blocking.retry_in() * 1000), HELD_RETRY_MS)
            await deps.publisher.publish(envelope, delay_route(deps.topology, envelope, wait_ms))
            self._acks.ack(message)
            return
        if not await self._run(envelope, handler, message):
            # A half-open probe granted above that did not run lets the next job probe.
            for name in handler.depends_on:
                self.breakers.get(name).skip_probe()

    async def _run(
        self, envelope: Envelope, handler: Handler, message: AbstractIncomingMessage
    ) -> bool:
        """Start the job's run in the store, then run it; False when the handler did not run."""
        deps = self._deps
        key = envelope.idempotency_key or envelope.id
        timeout = handler.timeout or deps.group.spec.timeout / 1000
        now = self._clock()
        # The lease outlives the handler's timeout by a margin for the store's own writes; a
        # killed worker's claim expires then, and the redelivered job runs again.
        start = await self._starts.submit(
            RunStart(envelope.id, key, envelope.attempt, timeout * 1.5 + 2, now)
        )
        if start.outcome is StartOutcome.SETTLED:
            if start.job is not None and start.job.status is JobStatus.CANCELLED:
                deps.metrics.cancelled.labels(deps.group.name).inc()
            # Cancelled before it ran, or finished already (a redelivery after a crash: its
            # callback may not have been enqueued yet, and enqueueing it again is a no-op).
            await self._follow_up(start.job)
            self._acks.ack(message)
            return False
        if start.outcome is StartOutcome.HELD:
            await deps.publisher.publish(
                envelope, delay_route(deps.topology, envelope, HELD_RETRY_MS)
            )
            self._acks.ack(message)
            return False
        if start.job is not None:
            if start.outcome is StartOutcome.RUN:
                self._announcer.running(start.job)
            else:
                self._announcer.announce(start.job)
        if start.outcome is StartOutcome.DONE:
            await self._follow_up(start.job)
            self._acks.ack(message)
            return False
        # Counted at each start of a run: every attempt starts once, and the surplus is
        # restarts after a crash or a kill (a job held by a live claim does not count).
        if start.deliveries - envelope.attempt >= deps.settings.poison_deliveries:
            await deps.store.release_execution(key, envelope.id)
            error = "started too often without finishing; it may crash its worker"
            decision = dead(
                envelope, DeadReason.POISON, error, group=deps.group.name, topology=deps.topology
            )
            await self._carry_out(envelope, decision, message, kind=handler.pattern)
            return False
        await self._execute(envelope, handler, message, key, now, timeout)
        return True

    async def _execute(
        self,
        envelope: Envelope,
        handler: Handler,
        message: AbstractIncomingMessage,
        key: str,
        now: datetime,
        limit_s: float,
    ) -> None:
        """Run the handler, then record its result or carry out what its failure calls for."""
        deps = self._deps
        metrics, group, priority = deps.metrics, deps.group.name, envelope.priority.value
        metrics.started.labels(group, handler.pattern).inc()
        enqueued = envelope.not_before or envelope.created_at
        metrics.queue_wait.labels(group, priority).observe(
            max(0.0, (now - enqueued).total_seconds())
        )
        in_flight = metrics.in_flight.labels(group)
        in_flight.inc()
        began = time.perf_counter()
        try:
            payload = handler.parse(await self._payload(envelope))
            context = JobContext(
                job_id=envelope.id,
                job_type=envelope.type,
                attempt=envelope.attempt,
                max_attempts=attempts_allowed(deps.group.spec.retry, envelope.max_attempts),
                deadline=now + timedelta(seconds=limit_s),
                idempotency_key=key,
                correlation_id=envelope.correlation_id,
                lookup_job=deps.store.get_job,
            )
            async with asyncio.timeout(limit_s):
                result = await handler.call(payload, context)
        except Exception as exc:  # the handler's failure: the dispatcher decides what follows
            in_flight.dec()
            metrics.duration.labels(group, priority).observe(time.perf_counter() - began)
            if not isinstance(exc, Permanent | ContractError):
                for name in handler.depends_on:
                    self.breakers.get(name).failed()
            await deps.store.release_execution(key, envelope.id)
            decision = failed(
                envelope,
                exc,
                group=deps.group.name,
                policy=deps.group.spec.retry,
                topology=deps.topology,
                now=self._clock(),
            )
            await self._carry_out(envelope, decision, message, kind=handler.pattern)
            return
        in_flight.dec()
        metrics.duration.labels(group, priority).observe(time.perf_counter() - began)
        for name in handler.depends_on:
            self.breakers.get(name).succeeded()
        result = orjson.loads(orjson.dumps(result, default=str))
        finished = self._clock()
        job = await self._finishes.submit(
            RunFinish(envelope.id, key, result, deps.settings.result_ttl, finished)
        )
        if job is not None:
            self._announcer.announce(job)
        metrics.completed.labels(group, handler.pattern, "succeeded").inc()
        logger.debug("job succeeded")
        await self._follow_up(job)
        self._acks.ack(message)

    async def _follow_up(self, job: JobRecord | None) -> None:
        """Enqueue the callback of a job that ended, before its message is acked."""
        # A failure raises: the message is requeued, and its redelivery enqueues the callback.
        if job is not None and job.callback_url is not None and self._deps.submitter is not None:
            await self._deps.submitter.follow_up(job)

    async def _payload(self, envelope: Envelope) -> Any:
        if envelope.payload_ref is None:
            return envelope.payload
        return orjson.loads(await self._deps.blobs.get(envelope.payload_ref))

    async def _carry_out(
        self,
        envelope: Envelope,
        decision: Decision,
        message: AbstractIncomingMessage,
        *,
        kind: str = UNKNOWN_TYPE,
    ) -> None:
        """Publish what the decision says (with confirms), record it, then ack the original."""
        if decision.envelope is None or decision.route is None:
            raise ValueError(f"a {decision.action} decision carries what to publish")
        await self._deps.publisher.publish(decision.envelope, decision.route)
        outcome = "retried" if decision.action is Action.RETRY else "dead"
        self._deps.metrics.completed.labels(self._deps.group.name, kind, outcome).inc()
        if decision.action is Action.RETRY:
            logger.info("job retried in {} ms: {}", decision.delay_ms, decision.error)
        else:
            logger.warning("job dead-lettered: {}", decision.error)
        if decision.action is Action.RETRY:
            await self._record(
                envelope, JobStatus.RETRYING, last_error=decision.error, attempts=envelope.attempt
            )
        else:
            await self._record(
                envelope, JobStatus.DEAD, last_error=decision.error, finished_at=self._clock()
            )
        self._acks.ack(message)

    async def _record(self, envelope: Envelope, status: JobStatus, **fields: Any) -> None:
        """Record the job's new status in the store and announce it (events are advisory)."""
        job = await self._deps.store.transition(
            envelope.id, status, allowed_from=STARTABLE, updated_at=self._clock(), **fields
        )
        if job is not None:
            self._announcer.announce(job)
        await self._follow_up(job)

"""The worker: consumes a group's queues and carries out what ``decide`` says, a window at a time."""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Generator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, partial
from operator import attrgetter
from typing import Any

import orjson
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from loguru import logger
from opentelemetry.trace import SpanKind

from consumers.acks import CHANNEL_ERRORS, Acks
from consumers.breaker import BreakerReport, Breakers
from consumers.delivery_route import Properties, route_deliveries
from consumers.dispatch import (
    PUBLISHES,
    Act,
    Action,
    Broken,
    Facts,
    Failed,
    Outcome,
    Policy,
    Succeeded,
    attempts_allowed,
    decide,
)
from consumers.handlers import Handler, HandlerRegistry, JobContext, Permanent
from consumers.metrics import UNKNOWN_TYPE, WorkerMetrics
from jobstore.blobs import BlobStore
from jobstore.model import (
    JobEvent,
    JobEventKind,
    JobStatus,
    JobStore,
    RunEnd,
    RunJob,
    RunStart,
    RunStarted,
    StartOutcome,
)
from jobstore.sealed_jobs import opened
from jobstore.workflows import StepOutcome
from producers.events import event_body, event_key
from producers.frame_tap import FrameTap
from producers.publisher import Publisher
from producers.submit import Submitter, utc_now
from telemetry import tracing
from telemetry.logs import bind_job
from topology.broker import connect, connection_lost, existing
from topology.compiled import CompiledGroup, CompiledTopology
from topology.envelope import Envelope, decode
from topology.errors import ContractError, TaskqError
from topology.names import DELAY_HEADER
from topology.sealing import SEALED_CONTENT_TYPE, Sealer
from topology.settings import BrokerSettings, WorkerSettings

OUTAGE_PAUSE_S = 0.5  # how long a delivery that failed waits before it is requeued, at first
MAX_REQUEUE_PAUSE_S = 30.0
_OUTCOME = {Act.ACK: "succeeded", Act.RETRY: "retried", Act.DEAD: "dead", Act.REJECT: "dead"}
# The ends a job's history records a step for: the failures (a success is on its row).
_EVENTS = {
    Act.RETRY: JobEventKind.RETRIED,
    Act.DEAD: JobEventKind.DEAD,
    Act.REJECT: JobEventKind.DEAD,
}
_UNTRACED = nullcontext()


def requeue_pause(headers: Mapping[str, Any] | None) -> float:
    """Return the seconds a failed delivery waits before its requeue: 0.5, doubling with each ``x-delivery-count``, at most 30."""
    # Only quorum queues count deliveries; a classic queue's message always waits the least.
    count = (headers or {}).get("x-delivery-count")
    doublings: int = min(count, 16) if isinstance(count, int) and count > 0 else 0
    return min(OUTAGE_PAUSE_S * 2.0**doublings, MAX_REQUEUE_PAUSE_S)


@dataclass(slots=True)
class Deps:
    """What a worker works with, injected so tests can pass fakes."""

    topology: CompiledTopology
    group: CompiledGroup
    registry: HandlerRegistry
    store: JobStore
    blobs: BlobStore
    publisher: Publisher
    settings: WorkerSettings
    # Enqueues the callbacks of jobs that end (None: no callbacks).
    submitter: Submitter | None = None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    # Opens sealed payloads and seals results (no keys: both stay clear).
    sealer: Sealer = field(default_factory=Sealer)


@dataclass(slots=True, eq=False)
class Delivery:
    """One delivery in hand, and what the worker learnt about it so far."""

    channel: AbstractChannel
    tag: int
    body: bytes
    properties: Properties
    lane: int = 0  # the rank of the queue it came from: 0 is the group's most urgent
    envelope: Envelope | None = None
    handler: Handler | None = None
    start: RunStarted | None = None
    job: RunJob | None = None  # the job's row, as the window found it
    ended: JobStatus | None = None  # the status its end recorded
    trace: object | None = None  # the context of its run's span, to publish its hops in
    ran_from: datetime | None = None  # when its run began


@dataclass(slots=True)
class JobChange:
    """A change of a job's status, as its event tells it."""

    id: str
    type: str
    status: JobStatus
    attempts: int
    updated_at: datetime
    last_error: str | None
    result: Any
    tenant: str


class Worker:
    """Runs one consumer group's jobs: prefetch and concurrency from the topology."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._policy = Policy(
            deps.group.name, deps.group.spec.retry, deps.topology, deps.settings.poison_deliveries
        )
        self._inbox: list[Delivery] = []
        self._done: list[tuple[Delivery, Action]] = []
        self._limit = deps.group.spec.timeout / 1000  # seconds; a handler may set its own
        self._running: dict[asyncio.Task[None], float] = {}  # each run: the loop time it ends by
        self._overdue: set[asyncio.Task[None]] = set()  # cancelled for running past it
        self._watch: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._executor: asyncio.Task[None] | None = None
        self._taking = True
        self._acks = Acks()
        self._connection: AbstractRobustConnection | None = None
        self._tap = FrameTap()
        self._consumers: list[tuple[AbstractChannel, str]] = []
        # Running events wait ``running_event_delay`` (loop time): dropped if the outcome comes first.
        self._due: dict[str, tuple[float, RunJob, datetime]] = {}
        self._due_timer: asyncio.TimerHandle | None = None
        self._events: list[tuple[str, bytes]] = []  # published with the window's acks
        self._background: set[asyncio.Task[Any]] = set()  # claims given back, delayed requeues
        self._laned = len(deps.group.queue_names) > 1  # a queue per priority: ordered in hand
        self._children = _Metrics(deps.metrics, deps.group.name)
        self.breaker_report = BreakerReport(deps.store, deps.group.name, metrics=deps.metrics)
        self.breakers = Breakers(
            deps.settings.breaker_threshold,
            deps.settings.breaker_cooldown,
            on_change=self.breaker_report.changed,
        )

    async def start(self, broker: BrokerSettings) -> None:
        """Open the worker's own connection and consume every work queue of the group (most urgent lane first)."""
        connection = self._connection = await connect(
            broker, name=f"taskq worker {self._deps.group.name}", transport=self._tap
        )
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._deps.group.spec.prefetch)
            self._executor = asyncio.get_running_loop().create_task(self._execute())
            # A reopened channel (after a reconnect) keeps its QoS; its consumers are ours to
            # renew, from before the first consume: the connection may go while it is under way.
            channel.reopen_callbacks.add(self._reconsume)
            try:
                await self._consume(channel)
            except BaseException as exc:
                if not connection_lost(exc):
                    raise
                logger.warning(
                    "connection lost while starting to consume, consuming once back: {!r}", exc
                )
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _reconsume(self, channel: AbstractRobustChannel | None) -> None:
        """Consume again on ``channel``, reopened after a reconnect, and say so when it cannot."""
        try:
            await self._consume(channel)
        except BaseException as exc:
            # aio-pika drops what a reopen callback raises: unsaid, the worker would stay
            # connected and consume nothing. A connection lost again reopens the channel again.
            if not connection_lost(exc):
                logger.error("the worker consumes nothing after a reconnect: {!r}", exc)
            raise

    async def _consume(self, channel: AbstractRobustChannel | None) -> None:
        """Consume the group's queues on ``channel`` (again, when it reopens after a reconnect)."""
        if channel is None or not self._taking:
            return
        underlay = await channel.get_underlay_channel()
        self._consumers = []
        for lane, name in enumerate(self._deps.group.queue_names):
            with existing(name):
                await underlay.queue_declare(name, passive=True)
            # Routed before the broker hears of the consumer: its first delivery may come next.
            tag = f"taskq.{self._deps.group.name}.{uuid.uuid4().hex}"
            route_deliveries(self._tap, underlay, tag, partial(self._on_delivery, lane))
            await underlay.basic_consume(name, self._untapped, no_ack=False, consumer_tag=tag)
            self._consumers.append((underlay, tag))

    async def stop(self, grace: float | None = None) -> bool:
        """Stop consuming, then wait up to ``grace`` seconds for jobs in flight; True if they all finished."""
        self._taking = False
        for underlay, tag in self._consumers:
            if not underlay.is_closed:
                try:
                    await underlay.basic_cancel(tag)
                except (*CHANNEL_ERRORS, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and not connection_lost(exc):
                        raise
                    logger.warning("consumer not cancelled: {!r}", exc)
        self._consumers.clear()
        # Taking no more jobs, the worker's breakers gate nothing: their rows go now.
        await self.breaker_report.close()
        deadline = time.monotonic() + (self._deps.settings.grace if grace is None else grace)
        # Unstarted deliveries stay unacked: closing the channel returns them to the queue.
        while (self._running or self._done) and (left := deadline - time.monotonic()) > 0:
            if self._running:
                await asyncio.wait(self._running, timeout=left)
            self._wake.set()
            await asyncio.sleep(0)
            await self._idle()
        clean = not self._running and not self._done
        await self._release()
        return clean

    async def _release(self) -> None:
        """Stop the executor and the timers, and close the connection (unsettled deliveries go back)."""
        if self._executor is not None:
            self._executor.cancel()
            await asyncio.gather(self._executor, return_exceptions=True)
        self._due.clear()
        for timer in (self._due_timer, self._watch):
            if timer is not None:
                timer.cancel()
        self._due_timer = self._watch = None
        for task in list(self._background):
            task.cancel()  # a delayed requeue: closing the channel requeues the delivery now
        if self._connection is not None:
            await self._connection.close()

    async def _idle(self) -> None:
        """Return once the executor has carried out everything queued for it."""
        for _ in range(1000):
            if not self._done and not self._wake.is_set():
                return
            await asyncio.sleep(0.001)

    def _on_delivery(
        self, lane: int, channel: AbstractChannel, tag: int, properties: Properties, body: bytes
    ) -> None:
        self._acks.received(channel, tag)
        self._inbox.append(Delivery(channel, tag, body, properties, lane))
        self._wake.set()

    async def _untapped(self, message: DeliveredMessage) -> None:
        """Close the channel of a delivery the tap did not take (it cannot happen)."""
        # A later ``multiple`` ack would settle it unseen; a closed robust channel gives back
        # all it had in flight and opens again.
        logger.error("a delivery bypassed the worker's tap; closing its channel")
        await message.channel.close(RuntimeError("delivery not tapped"))

    async def _execute(self) -> None:
        """Carry out one window at a time, each with whatever is in hand (the executor)."""
        while True:
            await self._wake.wait()
            # One turn of the loop first: runs launched by the last window finish, and the
            # deliveries that came meanwhile are read, so this window carries all of them.
            await asyncio.sleep(0)
            self._wake.clear()
            try:
                await self._window()
            except asyncio.CancelledError as exc:
                if not connection_lost(exc):
                    raise  # the worker is stopping
                # Not the executor's own: a call on a connection aiormq gave up on. Ending here
                # would leave the worker consuming with nobody to run what it takes.
                logger.warning("a window of deliveries was cut short by a lost connection")
            except Exception:  # a bug: never let it stop the worker from working
                logger.exception("a window of deliveries failed; they will be redelivered")

    async def _window(self) -> None:
        now = utc_now()
        finals, self._done = self._done, []
        claims: list[Delivery] = []
        free = self._deps.group.spec.concurrency - len(self._running)
        if self._taking and free > 0 and self._inbox:
            if len(self._inbox) > free and self._laned:
                # Each lane has a prefetch of its own, so an urgent job is delivered at once;
                # of the jobs in hand, the more urgent lanes' start first (in arrival order
                # within a lane: the sort is stable).
                self._inbox.sort(key=attrgetter("lane"))
            taken, self._inbox = self._inbox[:free], self._inbox[free:]
            if self._inbox:
                self._wake.set()  # the rest waits for free slots, in the next window
            for delivery in taken:
                action = self._first(delivery, now)
                if action.act is Act.CLAIM:
                    claims.append(delivery)
                else:
                    finals.append((delivery, action))
        await self._publish(finals)
        started = await self._record(finals, claims, now)
        await self._settle(finals)
        self._announce_due()
        launched: Counter[str] = Counter()
        for delivery in started:
            action = self._decide(Facts(delivery.envelope, start=delivery.start))
            if action.act is Act.RUN and delivery.handler is not None:
                self._launch(delivery, delivery.handler, now)
                launched[delivery.handler.pattern] += 1
            else:
                self._unprobed(delivery)
                self._done.append((delivery, action))
                self._wake.set()
        for kind, n in launched.items():
            self._children.started(kind).inc(n)
        if launched:
            self._children.in_flight.set(len(self._running))

    def _first(self, delivery: Delivery, now: datetime) -> Action:
        """Decode ``delivery`` and decide what it needs before any run starts."""
        try:
            envelope = delivery.envelope = decode(delivery.body)
        except ContractError as exc:
            logger.warning("undecodable message dead-lettered: {}", exc)
            return decide(Facts(None, undecodable=str(exc)), self._policy, now)
        handler = delivery.handler = self._deps.registry.resolve(envelope.type)
        depends_on = None if handler is None else handler.depends_on
        blocking = self.breakers.blocking(depends_on) if depends_on else None
        blocked = None if blocking is None else max(int(blocking.retry_in() * 1000), 1000)
        return decide(Facts(envelope, handler is not None, blocked), self._policy, now)

    def _unprobed(self, delivery: Delivery) -> None:
        """Let the next job probe: a half-open breaker's probe granted to ``delivery`` did not run."""
        if delivery.handler is not None:
            for name in delivery.handler.depends_on:
                self.breakers.get(name).skip_probe()

    def _decide(self, facts: Facts) -> Action:
        return decide(facts, self._policy, utc_now())

    async def _publish(self, finals: list[tuple[Delivery, Action]]) -> None:
        """Publish what the actions send on (confirmed); one whose publish fails is decided again."""
        sending = [(i, d, a) for i, (d, a) in enumerate(finals) if a.act in PUBLISHES]
        if not sending:
            return
        traced = tracing.enabled()
        errors: list[TaskqError | None] = []
        for batch in [[one] for one in sending] if traced else [sending]:
            with self._scope(batch[0][1]) if traced else _UNTRACED:  # each in its job's trace
                envelopes, routes = [a.envelope for *_, a in batch], [a.route for *_, a in batch]
                try:
                    errors += await self._deps.publisher.publish_many(envelopes, routes)  # type: ignore[arg-type]
                except TaskqError as exc:
                    errors += [exc] * len(batch)
        for (index, delivery, action), error in zip(sending, errors, strict=True):
            if error is not None:
                logger.warning("job {} not sent on: {}", delivery.tag, error)
                finals[index] = (
                    delivery,
                    self._decide(Facts(delivery.envelope, outcome=Broken(error, action.act))),
                )

    async def _record(
        self, finals: list[tuple[Delivery, Action]], claims: list[Delivery], now: datetime
    ) -> list[Delivery]:
        """End and start the window's runs in one store transaction; return the claims to run."""
        ends = [(i, end) for i, (d, a) in enumerate(finals) if (end := self._end(d, a, now))]
        starts = [self._start(delivery, now) for delivery in claims]
        if not ends and not starts:
            return []
        try:
            jobs, started = await self._deps.store.run_window([e for _, e in ends], starts)
        except TaskqError as exc:
            # Each end alone then, so that one refused value fails alone.
            logger.warning("a window's store write failed, writing its runs one by one: {}", exc)
            jobs = [await self._end_alone(finals, index, end) for index, end in ends]
            try:
                _, started = await self._deps.store.run_window([], starts)
            except TaskqError as error:
                logger.warning("runs not started, their deliveries go back to the queue: {}", error)
                for delivery in claims:
                    self._unprobed(delivery)
                    broken = Broken(error, Act.CLAIM)
                    finals.append(
                        (delivery, self._decide(Facts(delivery.envelope, outcome=broken)))
                    )
                claims, started = [], []
        for (index, _), job in zip(ends, jobs, strict=True):
            self._ended(*finals[index], job, now)
        for delivery, start in zip(claims, started, strict=True):
            delivery.start = start
            delivery.job = start.job
        return claims

    async def _end_alone(
        self, finals: list[tuple[Delivery, Action]], index: int, end: RunEnd
    ) -> RunJob | None:
        """Write ``end`` alone; if refused, decide again and give its claim back in the background."""
        delivery, action = finals[index]
        try:
            (job,), _ = await self._deps.store.run_window([end], [])
        except TaskqError as exc:
            # The claim goes back, so the redelivery is counted again.
            redo = self._decide(Facts(delivery.envelope, outcome=Broken(exc, action.act)))
            release = RunEnd(end.job_id, end.run, None, end.at, error=redo.error)
            self._in_background(self._deps.store.run_window([release], []))
            finals[index] = (delivery, redo)
            return None
        return job

    async def _requeue_later(
        self, deliveries: list[tuple[AbstractChannel, int]], pause: float
    ) -> None:
        await asyncio.sleep(pause)
        await self._acks.settle((), requeue=deliveries)

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # held, so it is not collected before it ends
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A claim not given back expires with its lease; a delivery not requeued comes
            # back when its channel closes.
            logger.warning("background work of the worker failed: {}", task.exception())

    def _start(self, delivery: Delivery, now: datetime) -> RunStart:
        envelope = delivery.envelope
        handler = delivery.handler
        if envelope is None or handler is None:
            raise ValueError("only a decoded delivery with a handler starts a run")
        limit = handler.timeout or self._limit
        # The lease outlives the handler's timeout by a margin for the store's own writes; a
        # killed worker's claim expires then, and the redelivered job runs again. The envelope
        # creates the job's row if the message overtook its submitter's insert.
        return RunStart(envelope.id, envelope.attempt, limit * 1.5 + 2, now, envelope)

    def _end(self, delivery: Delivery, action: Action, now: datetime) -> RunEnd | None:
        """Return the store write ``action`` calls for, if any."""
        envelope = delivery.envelope
        if envelope is None or action.act in (Act.SKIP, Act.CANCEL, Act.FORWARD):
            return None
        start = delivery.start
        # Only a run this worker started holds the claim (a HELD start names another's run).
        ours = start is not None and start.outcome is StartOutcome.RUN and start.job is not None
        run = start.deliveries if ours and start is not None else 0
        if run == 0 and action.act is Act.REQUEUE:
            return None  # no claim of ours to give back
        result, sealer = action.result, self._deps.sealer
        if result is not None and sealer.enabled:
            result = sealer.seal_value(envelope.id, orjson.dumps(result), "result")
        # An end without a run (no handler for the type) may find no row yet: it makes one.
        made = envelope if run == 0 else None
        end = RunEnd(envelope.id, run, action.status, now, result, action.error, made)
        kind = _EVENTS.get(action.act)
        if kind is not None:
            end.event = _step(delivery, envelope, action, kind, now)
        return end

    def _ended(
        self, delivery: Delivery, action: Action, found: RunJob | None, now: datetime
    ) -> None:
        """Note a recorded end, and queue its status event (``found``: the job it ended)."""
        if found is None:
            return
        self._due.pop(found.id, None)
        delivery.job = found
        status = action.status
        if status is None:  # the claim given back: the status stays as it was
            return
        delivery.ended = status
        self._event(found, status, now, action.error or found.last_error, action.result)

    async def _settle(self, finals: list[tuple[Delivery, Action]]) -> None:
        """Enqueue callbacks, publish the window's events, then ack, nack or reject each delivery."""
        follow = [d for d, a in finals if a.act not in (Act.REQUEUE, Act.FORWARD)]
        failed = await self._follow_up(follow)
        events, self._events = self._events, []
        if events:
            try:
                await self._deps.publisher.publish_events(events)
            except TaskqError as exc:
                logger.warning("{} status events not published: {}", len(events), exc)
        done: list[tuple[AbstractChannel, int]] = []
        requeue: dict[float, list[tuple[AbstractChannel, int]]] = {}
        reject: list[tuple[AbstractChannel, int]] = []
        counts: Counter[tuple[str, Act]] = Counter()
        for delivery, action in finals:
            pair = (delivery.channel, delivery.tag)
            if action.act is Act.REQUEUE or delivery in failed:
                requeue.setdefault(requeue_pause(delivery.properties.headers), []).append(pair)
            elif action.act is Act.REJECT:
                reject.append(pair)
            else:
                done.append(pair)
            kind = delivery.handler.pattern if delivery.handler is not None else UNKNOWN_TYPE
            counts[kind, action.act] += 1
        await self._acks.settle(done, reject=reject)
        for pause, pairs in requeue.items():
            # Later, not now: what failed is likely to fail again at once (an outage, or a
            # value refused until the bound dead-letters it), and a requeued message comes
            # straight back. Until then the delivery stays open: no multiple ack covers it.
            self._in_background(self._requeue_later(pairs, pause))
        # One increment per kind of outcome, not per job.
        for (kind, act), n in counts.items():
            outcome = _OUTCOME.get(act)
            if outcome is not None:
                self._children.completed(kind, outcome).inc(n)
            elif act is Act.CANCEL:
                self._children.cancelled.inc(n)
        self._children.in_flight.set(len(self._running))

    async def _follow_up(self, deliveries: list[Delivery]) -> set[Delivery]:
        """Enqueue ended jobs' callbacks and publish their released steps; the callback failures."""
        submitter = self._deps.submitter
        failed: set[Delivery] = set()
        if submitter is None:
            return failed
        for delivery in deliveries:
            found, ended = delivery.job, delivery.ended
            final = found is not None and (found.status.terminal or (ended and ended.terminal))
            if found is None or found.callback_url is None or not final:
                continue
            try:
                job = await self._deps.store.get_job(found.id)  # the whole job, for its callback
                if job is not None:
                    await submitter.follow_up(job)
            except TaskqError as exc:
                # Requeued: its redelivery finds the job ended and enqueues the callback then.
                logger.warning("callback of job {} not enqueued: {}", found.id, exc)
                failed.add(delivery)
        released = [i for d in deliveries if d.job is not None for i in d.job.released]
        if released:
            try:
                await submitter.release(released)
            except TaskqError as exc:  # the repair sweep publishes them later
                logger.warning("released workflow steps not published yet: {}", exc)
        return failed

    def _launch(self, delivery: Delivery, handler: Handler, now: datetime) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time()
        if delivery.job is not None:  # its running event, unless its end is recorded first
            due = at + self._deps.settings.running_event_delay
            self._due[delivery.job.id] = (due, delivery.job, now)
            if self._due_timer is None:
                self._due_timer = loop.call_at(due, self._due_now)
        limit = handler.timeout or self._limit
        deadline = at + limit
        # The run's first step happens here, in a context of its own (its log fields, its
        # span): a handler that never waits ends within it, without a task of its own.
        run = self._run(delivery, now, limit)
        context = contextvars.copy_context()
        try:
            waiting = context.run(run.send, None)
        except StopIteration:
            return
        task = loop.create_task(_resume(run, waiting), context=context)
        self._running[task] = deadline
        task.add_done_callback(self._finished)
        # One timer for every run (not one each): it fires at the earliest deadline.
        if self._watch is None or deadline < self._watch.when():
            if self._watch is not None:
                self._watch.cancel()
            self._watch = loop.call_at(deadline, self._expire)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        self._overdue.discard(task)

    def _expire(self) -> None:
        """Cancel the runs past their deadline (each sees a timeout), then wait for the next one."""
        self._watch = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, when in self._running.items():
            if when <= now and task not in self._overdue:
                self._overdue.add(task)
                task.cancel()
        ahead = [when for task, when in self._running.items() if task not in self._overdue]
        if ahead:
            self._watch = loop.call_at(min(ahead), self._expire)

    async def _run(self, delivery: Delivery, now: datetime, limit: float) -> None:
        """Run the handler inside the job's log context (and span), then queue what follows."""
        envelope, handler = delivery.envelope, delivery.handler
        if envelope is None or handler is None:
            return
        # This task runs this one job: its fields stay bound until it ends.
        bind_job(
            job_id=envelope.id,
            job_type=envelope.type,
            group=self._deps.group.name,
            attempt=envelope.attempt,
            correlation_id=envelope.correlation_id,
        )
        with self._scope(delivery) if tracing.enabled() else _UNTRACED:
            flow = delivery.job.workflow_id if delivery.job is not None else None
            outcome = await self._call(envelope, handler, now, limit, flow)
            delivery.trace = tracing.current()
            action = self._decide(Facts(envelope, start=delivery.start, outcome=outcome))
            # Failures at INFO and up, success only at DEBUG.
            if action.act is Act.ACK:
                logger.debug("job succeeded")
            elif action.act is Act.RETRY:
                logger.info("job retried in {} ms: {}", action.delay_ms, action.error)
            elif action.act is Act.DEAD:
                logger.warning("job dead-lettered: {}", action.error)
        delivery.ran_from = now  # for a failed attempt's step in the job's history
        self._done.append((delivery, action))
        self._wake.set()

    async def _call(
        self,
        envelope: Envelope,
        handler: Handler,
        now: datetime,
        limit: float,
        workflow_id: str | None = None,
    ) -> Outcome:
        """Run ``handler`` on ``envelope`` within its timeout; its outcome, never an exception."""
        deps = self._deps
        children = self._children
        priority = envelope.priority.value
        enqueued = envelope.not_before or envelope.created_at
        children.queue_wait(priority).observe(max(0.0, (now - enqueued).total_seconds()))
        began = time.perf_counter()
        try:
            payload = handler.parse(await self._payload(envelope))
            context = JobContext(
                job_id=envelope.id,
                job_type=envelope.type,
                attempt=envelope.attempt,
                max_attempts=attempts_allowed(deps.group.spec.retry, envelope.max_attempts),
                deadline=now + timedelta(seconds=limit),
                idempotency_key=envelope.idempotency_key or envelope.id,
                correlation_id=envelope.correlation_id,
                lookup_job=deps.store.get_job,
                workflow_id=workflow_id,
                inputs=await self._inputs(envelope.id) if workflow_id is not None else (),
            )
            result = orjson.loads(orjson.dumps(await handler.call(payload, context), default=str))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task not in self._overdue:
                raise  # the worker is stopping
            task.uncancel()  # the cancel was the timeout's: it ends here
            error: BaseException = TimeoutError(f"the handler ran past its {limit:g}s timeout")
        except Exception as exc:  # the handler's failure: decide says what follows
            error = exc
        else:
            for name in handler.depends_on:
                self.breakers.get(name).succeeded()
            return Succeeded(result)
        finally:
            children.duration(priority).observe(time.perf_counter() - began)
        # Not a dependency's failure: the job's own.
        if not isinstance(error, Permanent | ContractError):
            for name in handler.depends_on:
                self.breakers.get(name).failed()
        return Failed(error)

    async def _inputs(self, job_id: str) -> tuple[StepOutcome, ...]:
        """Return what a workflow step is given: its chain's previous step, or its chord's members, results opened."""
        given = await self._deps.store.step_inputs(job_id)
        return () if given is None else tuple(opened(o, self._deps.sealer) for o in given.outcomes)

    async def _payload(self, envelope: Envelope) -> Any:
        """Return the job's payload: carried, sealed (ContractError if it does not open) or claim-checked."""
        deps = self._deps
        if envelope.payload_enc is not None:
            return orjson.loads(deps.sealer.open(envelope.id, envelope.payload_enc))
        ref = envelope.payload_ref
        if ref is None:
            return envelope.payload
        data = await deps.blobs.get(ref)  # offloaded to the blob store
        if ref.content_type == SEALED_CONTENT_TYPE:
            data = deps.sealer.open(envelope.id, data.decode("ascii", "replace"))
        return orjson.loads(data)

    def _scope(self, delivery: Delivery) -> AbstractContextManager[object]:
        """Return the job's trace to run a block in: its run's span, or a new consumer span for it."""
        envelope = delivery.envelope
        if delivery.trace is not None or envelope is None:
            return tracing.resumed(delivery.trace)
        attributes = {
            "taskq.job_id": envelope.id,
            "taskq.job_type": envelope.type,
            "taskq.attempt": envelope.attempt,
            "taskq.group": self._deps.group.name,
            "messaging.system": "rabbitmq",
        }
        # A child of the context the publisher put in the headers: one trace per job, across
        # every retry hop (each hop's publish happens inside this span).
        return tracing.span(
            f"{envelope.type} process",
            kind=SpanKind.CONSUMER,
            parent_headers=delivery.properties.headers or {},
            attributes=attributes,
        )

    def _due_now(self) -> None:
        self._due_timer = None
        self._wake.set()

    def _announce_due(self) -> None:
        """Queue the running events that came due (published with this window's events)."""
        loop = asyncio.get_running_loop()
        while self._due:
            job_id, (when, job, started) = next(iter(self._due.items()))
            if when > loop.time():
                if self._due_timer is None:
                    self._due_timer = loop.call_at(when, self._due_now)
                return
            del self._due[job_id]
            self._event(job, job.status, started, job.last_error, None)

    def _event(
        self, job: RunJob, status: JobStatus, at: datetime, error: str | None, result: Any
    ) -> None:
        """Queue the status event of ``job`` (published with the window's acks)."""
        change = JobChange(job.id, job.type, status, job.attempts, at, error, result, job.tenant)
        self._events.append((event_key(change), event_body(change)))


def _step(
    delivery: Delivery, envelope: Envelope, action: Action, kind: JobEventKind, now: datetime
) -> JobEvent:
    """Return the step of the job's history that a failure's end records."""
    began = delivery.ran_from
    took = None if began is None else int((now - began).total_seconds() * 1000)
    retried = kind is JobEventKind.RETRIED
    tier = action.route.headers.get(DELAY_HEADER) if retried and action.route else None
    return JobEvent(
        envelope.id,
        now,
        kind,
        envelope.attempt,
        action.error,
        took,
        action.delay_ms if retried else None,
        None if tier is None else str(tier),
        None if action.reason is None else action.reason.value,
        tracing.trace_id(delivery.trace) if tracing.enabled() else None,
    )


def _resume(run: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Carry ``run`` on as a task's body from where its first step left it (waiting on ``waiting``)."""
    while True:
        try:
            try:
                sent = yield waiting
            except GeneratorExit:
                run.close()
                raise
            except BaseException as exc:  # thrown in by the task: a cancellation
                waiting = run.throw(exc)
            else:
                waiting = run.send(sent)
        except StopIteration:
            return


class _Metrics:
    """The worker's metric children, looked up once per label set instead of once per job."""

    def __init__(self, metrics: WorkerMetrics, group: str) -> None:
        self.in_flight = metrics.in_flight.labels(group)
        self.cancelled = metrics.cancelled.labels(group)
        self.started = cache(partial(metrics.started.labels, group))
        self.completed = cache(partial(metrics.completed.labels, group))
        self.duration = cache(partial(metrics.duration.labels, group))
        self.queue_wait = cache(partial(metrics.queue_wait.labels, group))

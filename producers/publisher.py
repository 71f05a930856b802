"""Publishing with confirms: the ``Publisher`` port and its RabbitMQ adapter."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import aiormq
import pika.exceptions
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from opentelemetry.trace import SpanKind

from producers import wire
from producers.frame_tap import FrameTap
from producers.metrics import ProducerMetrics, exchange_kind
from telemetry import tracing
from topology.broker import CONNECT_ERRORS, connect, connection_lost
from topology.closing import AsyncClosing
from topology.compiled import CompiledTopology
from topology.envelope import CONTENT_TYPE, PERSISTENT, Envelope
from topology.errors import (
    BrokerUnavailableError,
    ConfirmTimeoutError,
    ContractError,
    PublishNackedError,
    TaskqError,
    UnroutableError,
)
from topology.names import ATTEMPT_HEADER
from topology.routes import Route, job_route
from topology.settings import BrokerSettings, PublisherSettings


class Publisher(Protocol):
    """Publishes envelopes and returns only once the broker confirmed them."""

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        """Publish one envelope (to its job route unless ``route`` is given) and await its confirm."""
        ...

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        """Publish many envelopes with their confirms awaited together; one result per envelope."""
        ...

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish status events ``(routing key, body)`` to the events exchange; nobody need listen."""
        ...


class ConfirmedPublisher(AsyncClosing):
    """Publishes persistent, mandatory messages on a shared confirm channel, confirms pipelined."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        tap: FrameTap,
        channel: AbstractRobustChannel,
        topology: CompiledTopology,
        settings: PublisherSettings,
        metrics: ProducerMetrics | None = None,
    ) -> None:
        self._connection = connection
        self._tap = tap
        self._metrics = metrics or ProducerMetrics()
        self._channel = channel
        self._topology = topology
        self._settings = settings
        self._events: AbstractRobustChannel | None = None
        self._renewable_at = 0.0  # monotonic time from which a refusal may renew the channel
        self._retiring: set[asyncio.Task[None]] = set()
        self._tables: dict[tuple[tuple[str, Any], ...], bytes] = {}
        self._deadlines = wire.Deadlines(settings.confirm_timeout)
        # labels() costs more than the observation; the exchange kinds are few.
        self._confirm_timers = functools.cache(self._metrics.confirm_seconds.labels)

    @classmethod
    async def connect(
        cls,
        broker: BrokerSettings,
        topology: CompiledTopology,
        settings: PublisherSettings | None = None,
        *,
        name: str = "taskq publisher",
        metrics: ProducerMetrics | None = None,
    ) -> ConfirmedPublisher:
        """Open a robust connection and a confirm channel (``BrokerUnavailableError``: no broker)."""
        tap = FrameTap()
        connection = await connect(broker, name=name, transport=tap)
        try:
            # Its acks, nacks and returns are read by ``wire.Confirms`` before aiormq sees them.
            channel = await connection.channel(publisher_confirms=True)
        except CONNECT_ERRORS as exc:
            await connection.close()
            raise BrokerUnavailableError(f"cannot open a confirm channel: {exc}") from exc
        return cls(connection, tap, channel, topology, settings or PublisherSettings(), metrics)

    async def close(self) -> None:
        """Close the connection (confirms still in flight fail with ``BrokerUnavailableError``)."""
        for task in self._retiring:
            task.cancel()
        await self._connection.close()

    @property
    def connection(self) -> AbstractRobustConnection:
        """Return the robust connection (other channels, such as event consumers, may share it)."""
        return self._connection

    @property
    def blocked(self) -> bool:
        """Return whether the broker blocks publishing on this connection now (a resource alarm)."""
        return self._tap.alarm.blocked

    @property
    def connected(self) -> bool:
        """Return whether the connection and channel are open right now."""
        return not self._connection.is_closed and not self._channel.is_closed

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        """Publish ``envelope`` and return once the broker confirmed it.

        Raises:
            PublishError: unroutable, nacked, or no confirm in time (then the outcome is unknown).
            BrokerUnavailableError: the connection is down.
            ContractError: a property is longer than AMQP allows (nothing was sent).
        """
        target = route or job_route(self._topology, envelope)
        attributes = {"messaging.system": "rabbitmq", "taskq.job_id": envelope.id}
        with tracing.span(
            f"{target.exchange} publish", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            [error] = await self._send([envelope], [target])
        if error is not None:
            raise error

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        """Publish every envelope, ``publish_window`` at a time; one result per envelope."""
        targets = (
            list(routes)
            if routes is not None
            else [job_route(self._topology, e) for e in envelopes]
        )
        if tracing.enabled():  # a span per message, each in the headers of its own message
            outcomes = await asyncio.gather(
                *(self.publish(e, r) for e, r in zip(envelopes, targets, strict=True)),
                return_exceptions=True,
            )
            return [_outcome(o) for o in outcomes]
        results: list[TaskqError | None] = []
        window = self._settings.publish_window
        for start in range(0, len(envelopes), window):
            stop = start + window
            results += await self._send(envelopes[start:stop], targets[start:stop])
        return results

    async def _send(
        self, envelopes: Sequence[Envelope], targets: Sequence[Route]
    ) -> list[TaskqError | None]:
        """Write the envelopes in one go and await their confirms; one result per envelope."""
        results: list[TaskqError | None] = [None] * len(envelopes)
        messages: list[wire.Outgoing] = []
        sending: list[tuple[int, Route]] = []
        for index, (envelope, target) in enumerate(zip(envelopes, targets, strict=True)):
            try:
                messages.append(self._outgoing(envelope, target))
            except ContractError as exc:  # refused before anything is written
                results[index] = exc
            else:
                sending.append((index, target))
        if not messages:
            return results
        robust, channel = await self._confirm_channel()
        began = time.perf_counter()
        try:
            sent = await wire.publish_confirmed(self._tap, channel, messages)
        except Exception as exc:
            outcomes: list[object] = [exc] * len(messages)
        else:
            self._deadlines.watch(sent.confirms)
            try:
                outcomes = await _all_settled(sent.confirms)
            finally:
                sent.forget()
        elapsed = time.perf_counter() - began
        for (index, target), outcome in zip(sending, outcomes, strict=True):
            results[index] = self._result(outcome, target, elapsed)
        if any(isinstance(outcome, wire.Nacked) for outcome in outcomes):
            await self._renew(robust)
        return results

    async def _renew(self, refused: AbstractRobustChannel) -> None:
        """Publish on a new confirm channel from now on, at most once a second, once ``refused`` was nacked."""
        # RabbitMQ 3.10 aims a channel's client of a quorum queue at the leader recorded at the
        # channel's first publish to it; while that node is down, the client refuses every
        # message to the queue for the channel's life. A new channel reads the record anew.
        now = time.monotonic()
        if refused is not self._channel or now < self._renewable_at:
            return  # renewed already, or lately: the next refusal tries again
        self._renewable_at = now + _RENEW_EVERY_S
        try:
            self._channel = await self._connection.channel(publisher_confirms=True)
        except (*CONNECT_ERRORS, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not connection_lost(exc):
                raise
            return  # the connection is going: it restores the old channel, renewed later
        # Confirms awaited on the old channel still come: close it once none can be awaited.
        task = asyncio.create_task(self._retire(refused))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, channel: AbstractRobustChannel) -> None:
        """Close a replaced confirm channel once every publish written on it stopped waiting."""
        # A publish takes at most a confirm timeout to reach its write and another to wait.
        await asyncio.sleep(2 * self._settings.confirm_timeout)
        with contextlib.suppress(*CONNECT_ERRORS, aiormq.exceptions.AMQPError):
            await channel.close()

    def _result(self, outcome: object, target: Route, elapsed: float) -> TaskqError | None:
        """Return the error a confirm's outcome means, or ``None`` (timed) for a confirm."""
        if isinstance(outcome, Exception):
            error = translate(outcome, target)
            if not isinstance(error, TaskqError):
                raise error from outcome
            return error
        if isinstance(outcome, BaseException):  # aiormq cancelled it: the channel went away
            return BrokerUnavailableError(f"no confirm: the channel closed ({outcome!r})")
        kind = exchange_kind(self._topology, target.exchange)
        self._confirm_timers(kind).observe(elapsed)
        return None

    def _outgoing(self, envelope: Envelope, target: Route) -> wire.Outgoing:
        """Return the message ``envelope`` is published as on ``target``."""
        headers: dict[str, Any] = {ATTEMPT_HEADER: envelope.attempt, **target.headers}
        tracing.inject(headers)  # traceparent: the consumer continues this trace
        try:
            properties = wire.encode_properties(
                content_type=CONTENT_TYPE,
                delivery_mode=PERSISTENT,
                headers=self._table(headers),
                priority=envelope.priority.level,
                correlation_id=envelope.correlation_id,
                message_id=envelope.id,
                # AMQP timestamps are whole seconds.
                timestamp=int(envelope.created_at.timestamp()),
                type=envelope.type,
            )
            message = wire.outgoing(
                target.exchange, target.routing_key, properties, envelope.encode(), envelope.id
            )
        except ValueError as exc:
            raise ContractError(f"job {envelope.id} cannot be published: {exc}") from exc
        return message

    def _table(self, headers: dict[str, Any]) -> bytes:
        """Return ``headers`` encoded, from a small cache: most messages carry the same few."""
        if len(headers) > 2:  # a traceparent, or a delay tier: not worth caching
            return wire.encode_table(headers)
        key = tuple(headers.items())
        table = self._tables.get(key)
        if table is None:
            table = wire.encode_table(headers)
            if len(self._tables) < 4096:  # attempts x lanes: bounded, but stay safe
                self._tables[key] = table
        return table

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish status events (transient, not mandatory: fine if nobody listens) in one write."""
        if not events:
            return
        await self._confirm_channel()
        exchange = self._topology.events_exchange
        try:
            messages = [
                wire.outgoing(exchange, key, _EVENT_PROPERTIES, body, mandatory=False)
                for key, body in events
            ]
        except ValueError as exc:
            raise ContractError(f"status events cannot be published: {exc}") from exc
        try:
            if self._events is None:
                # Events are advisory (the job store is the truth), so they ride a channel
                # without confirms: no second confirm round trip on every job's hot path.
                self._events = await self._connection.channel(publisher_confirms=False)
            channel = cast(aiormq.Channel, await self._events.get_underlay_channel())
            await wire.publish_unconfirmed(channel, messages)
        except asyncio.CancelledError as exc:
            if not connection_lost(exc):
                raise
            raise BrokerUnavailableError("the connection to RabbitMQ was lost") from exc
        except Exception as exc:
            raise translate(exc, Route(exchange, events[0][0])) from exc

    async def _confirm_channel(self) -> tuple[AbstractRobustChannel, aiormq.Channel]:
        """Return the confirm channel and its live underlay, waiting at most the confirm timeout for a reconnect."""
        if self._connection.is_closed:
            raise BrokerUnavailableError("the publisher is closed")
        if not self._connection.connected.is_set():
            try:
                async with asyncio.timeout(self._settings.confirm_timeout):
                    await self._connection.connected.wait()
            except TimeoutError as exc:
                raise BrokerUnavailableError(
                    "the connection to RabbitMQ is down and did not come back within "
                    f"{self._settings.confirm_timeout}s; it keeps reconnecting"
                ) from exc
        robust = self._channel
        try:
            channel = cast(aiormq.Channel, await robust.get_underlay_channel())
        except Exception as exc:
            raise BrokerUnavailableError(f"no open channel to RabbitMQ: {exc}") from exc
        if self._tap.routed(channel) is None:  # a new channel: after a reconnect, or the first
            self._tap.route(wire.Confirms(channel))
        return robust, channel


async def _all_settled(confirms: list[asyncio.Future[Any]]) -> list[object]:
    """Return each confirm's result or error, once all have come."""
    if len(confirms) == 1:  # the single publish: no gathering future needed
        try:
            return [await confirms[0]]
        except Exception as exc:
            return [exc]
        except asyncio.CancelledError as exc:
            if not connection_lost(exc):
                raise
            return [exc]  # as gather gives it: the confirm of a connection aiormq gave up on
    return list(await asyncio.gather(*confirms, return_exceptions=True))


def _outcome(outcome: object) -> TaskqError | None:
    """Return a gathered publish's result, re-raising what is not a taskq error."""
    if outcome is None or isinstance(outcome, TaskqError):
        return outcome
    raise cast(BaseException, outcome)


def translate(exc: Exception, route: Route) -> Exception:
    """Map an aio-pika, aiormq or pika failure to the taskq error that says what to do next."""
    where = f"exchange {route.exchange!r}, routing key {route.routing_key!r}"
    if isinstance(exc, wire.Returned | pika.exceptions.UnroutableError):
        return UnroutableError(f"no queue is bound for {where}; is the job type in the topology?")
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity) or (
        isinstance(exc, pika.exceptions.ChannelClosed) and exc.reply_code == _NOT_FOUND
    ):
        return UnroutableError(
            f"{where}: the exchange does not exist; run `taskctl topology apply`"
        )
    if isinstance(exc, wire.Nacked | pika.exceptions.NackError):
        return PublishNackedError(f"the broker refused the message for {where}")
    if isinstance(exc, asyncio.TimeoutError):
        return ConfirmTimeoutError(f"no confirm for {where} in time; the outcome is unknown")
    if isinstance(exc, pika.exceptions.ConnectionBlockedTimeout):
        return ConfirmTimeoutError(
            f"the broker blocked publishing (resource alarm) and sent no confirm for {where} "
            "in time; the outcome is unknown"
        )
    if isinstance(
        exc, (*CONNECT_ERRORS, aiormq.exceptions.AMQPError, pika.exceptions.AMQPError, RuntimeError)
    ):
        # pika's str() of a connection error is often empty; repr names the cause.
        return BrokerUnavailableError(f"publish to {where} failed: {str(exc) or repr(exc)}")
    return exc


_NOT_FOUND = 404
# A queue that refuses for good (full, under reject-publish) costs a new channel a second.
_RENEW_EVERY_S = 1.0
TRANSIENT = 1
_EVENT_PROPERTIES = wire.encode_properties(content_type=CONTENT_TYPE, delivery_mode=TRANSIENT)

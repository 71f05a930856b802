"""Publishing with confirms: the ``Publisher`` port and its RabbitMQ adapter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq import spec
from aiormq.abc import ChannelFrame
from opentelemetry.trace import SpanKind
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from producers.publish_metrics import CONFIRM_SECONDS, exchange_kind
from producers.settings import PublisherSettings
from telemetry import tracing
from topology.broker import CONNECT_ERRORS, connect
from topology.closing import AsyncClosing
from topology.envelope import Envelope
from topology.errors import (
    BrokerUnavailableError,
    ConfirmTimeoutError,
    PublishNackedError,
    TaskqError,
    UnroutableError,
)
from topology.model import CompiledTopology
from topology.routes import Route, job_route
from topology.settings import BrokerSettings


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
    """Publishes persistent, mandatory messages on a confirm channel of a robust connection.

    Concurrent ``publish`` calls share the channel, so their confirms are pipelined rather
    than one round trip each; ``publish_many`` keeps ``publish_window`` of them in flight.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        topology: CompiledTopology,
        settings: PublisherSettings,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._topology = topology
        self._settings = settings
        self._events: AbstractRobustChannel | None = None

    @classmethod
    async def connect(
        cls,
        broker: BrokerSettings,
        topology: CompiledTopology,
        settings: PublisherSettings | None = None,
        *,
        name: str = "taskq publisher",
    ) -> ConfirmedPublisher:
        """Open a robust connection and a confirm channel.

        Raises:
            BrokerUnavailableError: when RabbitMQ cannot be reached.
        """
        connection = await connect(broker, name=name)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except CONNECT_ERRORS as exc:
            await connection.close()
            raise BrokerUnavailableError(f"cannot open a confirm channel: {exc}") from exc
        return cls(connection, channel, topology, settings or PublisherSettings())

    async def close(self) -> None:
        """Close the connection (confirms still in flight fail with ``BrokerUnavailableError``)."""
        await self._connection.close()

    @property
    def connection(self) -> AbstractRobustConnection:
        """Return the robust connection (other channels, such as event consumers, may share it)."""
        return self._connection

    @property
    def connected(self) -> bool:
        """Return whether the connection and channel are open right now."""
        return not self._connection.is_closed and not self._channel.is_closed

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        """Publish ``envelope`` and return once the broker confirmed it.

        Raises:
            UnroutableError: no queue is bound for the routing key (or the exchange is missing).
            PublishNackedError: the broker refused the message.
            ConfirmTimeoutError: no confirm within ``confirm_timeout``; the outcome is unknown.
            BrokerUnavailableError: the connection is down.
        """
        target = route or job_route(self._topology, envelope)
        if not tracing.enabled():
            await self._publish(envelope, target)
            return
        attributes = {"messaging.system": "rabbitmq", "taskq.job_id": envelope.id}
        name = f"{target.exchange} publish"
        with tracing.span(name, kind=SpanKind.PRODUCER, attributes=attributes):
            await self._publish(envelope, target)

    async def _publish(self, envelope: Envelope, target: Route) -> None:
        props = envelope.properties()
        headers: dict[str, Any] = {**props.headers, **target.headers}
        tracing.inject(headers)  # traceparent: the consumer continues this trace
        # Straight to the channel aio-pika's robust channel currently holds: building an
        # aio_pika.Message per publish costs more than the whole envelope (bench/publish.py).
        properties = spec.Basic.Properties(
            content_type=props.content_type,
            delivery_mode=props.delivery_mode,
            priority=props.priority,
            correlation_id=props.correlation_id,
            message_id=props.message_id,
            timestamp=props.timestamp,
            message_type=props.type,
            headers=headers,
        )
        channel = await self._underlay()
        began = time.perf_counter()
        try:
            await channel.basic_publish(
                envelope.encode(),
                exchange=target.exchange,
                routing_key=target.routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._settings.confirm_timeout,
                # Don't hold the channel lock until the socket drains: the confirm proves
                # the write, and releasing early lets concurrent publishes pipeline.
                wait=False,
            )
        except Exception as exc:
            raise _translate(exc, target) from exc
        kind = exchange_kind(self._topology, target.exchange)
        CONFIRM_SECONDS.labels(kind).observe(time.perf_counter() - began)

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish status events (transient, not mandatory: fine if nobody listens) in one write.

        Raises:
            BrokerUnavailableError: the connection is down.
        """
        if not events:
            return
        await self._underlay()
        exchange = self._topology.events_exchange
        try:
            if self._events is None:
                # Events are advisory (the job store is the truth), so they ride a channel
                # without confirms: no second confirm round trip on every job's hot path.
                self._events = await self._connection.channel(publisher_confirms=False)
            channel = cast(aiormq.Channel, await self._events.get_underlay_channel())
            frames: list[Any] = []
            for routing_key, body in events:
                frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key))
                frames.append(ContentHeader(properties=_EVENT_PROPERTIES, body_size=len(body)))
                frames.extend(_body_frames(body, channel.max_content_size))
            # One frame set, one socket write for the whole batch: a channel without confirms
            # keeps no per-message state, so nothing of aiormq's bookkeeping is skipped.
            await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames))
        except Exception as exc:
            raise _translate(exc, Route(exchange, events[0][0])) from exc

    async def _underlay(self) -> aiormq.Channel:
        """Return the live channel, waiting at most the confirm timeout for a reconnect."""
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
        try:
            # aiormq's abstract channel omits basic_publish's `wait` flag; the real one has it.
            return cast(aiormq.Channel, await self._channel.get_underlay_channel())
        except Exception as exc:
            raise BrokerUnavailableError(f"no open channel to RabbitMQ: {exc}") from exc

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        """Publish every envelope, ``publish_window`` at a time; one result per envelope."""
        targets: Sequence[Route | None] = routes if routes is not None else [None] * len(envelopes)
        results: list[TaskqError | None] = []
        window = self._settings.publish_window
        for start in range(0, len(envelopes), window):
            outcomes = await asyncio.gather(
                *(
                    self.publish(env, route)
                    for env, route in zip(
                        envelopes[start : start + window],
                        targets[start : start + window],
                        strict=True,
                    )
                ),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, TaskqError) or outcome is None:
                    results.append(outcome)
                else:
                    raise outcome
        return results


def _translate(exc: Exception, route: Route) -> Exception:
    """Map an aio-pika/aiormq failure to the taskq error that says what to do next."""
    where = f"exchange {route.exchange!r}, routing key {route.routing_key!r}"
    if isinstance(exc, aio_pika.exceptions.PublishError):
        return UnroutableError(f"no queue is bound for {where}; is the job type in the topology?")
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return UnroutableError(
            f"{where}: the exchange does not exist; run `taskctl topology apply`"
        )
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishNackedError(f"the broker refused the message for {where}")
    if isinstance(exc, asyncio.TimeoutError):
        return ConfirmTimeoutError(f"no confirm for {where} in time; the outcome is unknown")
    if isinstance(exc, (*CONNECT_ERRORS, aiormq.exceptions.AMQPError, RuntimeError)):
        return BrokerUnavailableError(f"publish to {where} failed: {exc or type(exc).__name__}")
    return exc


_EVENT_PROPERTIES = spec.Basic.Properties(content_type="application/json", delivery_mode=1)


def _body_frames(body: bytes, limit: int) -> list[ContentBody]:
    """Return ``body`` cut into content frames of at most ``limit`` bytes (none when empty)."""
    return [ContentBody(body[i : i + limit]) for i in range(0, len(body), limit)]

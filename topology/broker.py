"""Connecting to RabbitMQ: one robust connection per process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

from telemetry.redaction import mask_url
from topology.errors import BrokerUnavailableError, TopologyError
from topology.settings import BrokerSettings
from topology.tls import broker_context, tls_failure

# Connection failures that mean "the broker is not there right now"; anything else is a bug.
CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


async def connect(
    settings: BrokerSettings, *, name: str, transport: TransportFactory | None = None
) -> AbstractRobustConnection:
    """Open a robust connection that reconnects and restores channels and consumers, through ``transport`` if given."""
    url = settings.amqp_url.get_secret_value()
    # aiormq reads the SASL mechanism from the URL's query; PLAIN sends the URL's user.
    auth = "external" if settings.broker_sasl_external else None
    # Reading the CA bundle is file I/O: off the loop, once per connection (reconnects reuse it).
    context = await asyncio.to_thread(broker_context, settings) if settings.amqps else None
    connection = aio_pika.RobustConnection(
        make_url(url, heartbeat=settings.heartbeat, auth=auth),
        client_properties={"connection_name": name},
        ssl_context=context,
        reconnect_interval=settings.reconnect_interval,
    )
    if len(settings.addresses) > 1:
        transport = Failover(transport, settings.addresses)
    if transport is not None:
        # aio-pika hands aiormq only the parameters it knows of; aiormq takes this one.
        connection.kwargs["transport_factory"] = transport
    try:
        await connection.connect(timeout=settings.connect_timeout)
        return connection
    except CONNECT_ERRORS as exc:
        raise unreachable(url, exc) from exc


def connection_lost(exc: BaseException) -> bool:
    """Return whether ``exc``, raised by a call on a channel, means its connection went away (not a refusal, not a cancel of ours)."""
    if isinstance(exc, asyncio.CancelledError):
        # aiormq fails every call awaiting a connection it gave up on (no frame for three
        # heartbeats) with CancelledError, though nobody cancelled the caller's task.
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return isinstance(exc, ConnectionError | aiormq.exceptions.ChannelInvalidStateError)


def unreachable(url: str, cause: BaseException) -> BrokerUnavailableError:
    """Return the error saying the broker at ``url`` cannot be reached, with the likely fix."""
    detail = str(cause) or repr(cause)
    if tls_failure(cause):
        hint = "check TASKQ_BROKER_TLS_* against the broker's certificate and CA"
    elif url.startswith("amqps://"):
        # A broker that refuses the client's certificate may only reset the connection.
        hint = "is it running, and does it accept TASKQ_BROKER_TLS_CERT_FILE?"
    else:
        hint = "is it running? (rabbitmq-server -detached)"
    return BrokerUnavailableError(
        f"cannot connect to RabbitMQ at {mask_url(url)}: {detail}; {hint}"
    )


def plain_transport(url: URL) -> TransportFactory:
    """Return aiormq's own transport for ``url``: TLS for ``amqps://``, else TCP."""
    return TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()


class Failover(TransportFactory):
    """Opens each connection to the first node that answers, and each reconnect starting from the next node."""

    # Past the node of the lost connection: it may still take TCP connections and yet never
    # answer (a partition, a hung node).

    def __init__(self, inner: TransportFactory | None, nodes: list[tuple[str, int]]) -> None:
        self._inner = inner
        self._nodes = nodes
        self._next = 0

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a transport to the next node in turn or, when it does not answer, to the ones after it."""
        inner = self._inner or plain_transport(url)
        failure: BaseException | None = None
        for step in range(len(self._nodes)):
            index = (self._next + step) % len(self._nodes)
            host, port = self._nodes[index]
            try:
                opened = await inner.create(url.with_host(host).with_port(port), **kwargs)
            except CONNECT_ERRORS as exc:
                failure = exc
                continue
            self._next = (index + 1) % len(self._nodes)
            return opened
        assert failure is not None
        raise failure


@contextmanager
def existing(queue: str) -> Iterator[None]:
    """Turn the broker's NOT_FOUND for ``queue`` (a passive declare) into a TopologyError saying what to run."""
    try:
        yield
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyError(
            f"queue {queue} does not exist; run `taskctl topology apply` first"
        ) from exc

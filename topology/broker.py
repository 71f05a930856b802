"""Connecting to RabbitMQ: one robust connection per process."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.connection import TransportFactory

from topology.errors import BrokerUnavailableError
from topology.settings import BrokerSettings, mask_url
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
    if transport is not None:
        # aio-pika hands aiormq only the parameters it knows of; aiormq takes this one.
        connection.kwargs["transport_factory"] = transport
    try:
        await connection.connect(timeout=settings.connect_timeout)
        return connection
    except CONNECT_ERRORS as exc:
        raise unreachable(url, exc) from exc


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

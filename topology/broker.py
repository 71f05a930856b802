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
    connection = aio_pika.RobustConnection(
        make_url(url, heartbeat=settings.heartbeat), client_properties={"connection_name": name}
    )
    if transport is not None:
        # aio-pika hands aiormq only the parameters it knows of; aiormq takes this one.
        connection.kwargs["transport_factory"] = transport
    try:
        await connection.connect(timeout=settings.connect_timeout)
        return connection
    except CONNECT_ERRORS as exc:
        raise BrokerUnavailableError(
            f"cannot connect to RabbitMQ at {mask_url(url)}: {exc or type(exc).__name__}; "
            "is it running? (rabbitmq-server -detached)"
        ) from exc

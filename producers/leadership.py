"""Leadership among scheduler replicas: the single active consumer of the scheduler queue leads."""

# Every replica consumes the queue (``x-single-active-consumer``) and publishes ticks to it;
# the one that hears them leads until a lease after the last. Not a fence: an old leader cut
# off may believe it leads for up to a lease (docs/schedules-and-workflows.md says why that is safe).

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from loguru import logger

from topology.broker import CONNECT_ERRORS, connect
from topology.settings import BrokerSettings

TICKS_PER_LEASE = 3


class Leadership:
    """Whether this replica leads: it consumes the scheduler queue and hears the ticks."""

    def __init__(self, broker: BrokerSettings, queue: str, *, lease: float) -> None:
        self._broker = broker
        self._queue = queue
        self._lease = lease
        self._until = 0.0  # monotonic time this replica leads until
        self._connection: AbstractRobustConnection | None = None
        self._ticking: asyncio.Task[None] | None = None
        self.name = f"scheduler-{uuid.uuid4().hex[:8]}"

    def leading(self) -> bool:
        """Return whether this replica heard a tick within the last lease."""
        return time.monotonic() < self._until

    async def start(self) -> None:
        """Connect, consume the scheduler queue and start ticking (``BrokerUnavailableError``: no broker)."""
        connection = self._connection = await connect(self._broker, name=f"taskq {self.name}")
        connection.close_callbacks.add(self._lost)
        channel = await connection.channel()
        channel.close_callbacks.add(self._lost)
        await channel.set_qos(prefetch_count=TICKS_PER_LEASE * 4)
        queue = await channel.get_queue(self._queue, ensure=False)
        await queue.consume(self._tick, consumer_tag=f"taskq.{self.name}")
        self._ticking = asyncio.create_task(self._keep_ticking(channel))

    async def stop(self) -> None:
        """Stop ticking and close the connection: the broker hands leadership to the next replica."""
        self._until = 0.0
        if self._ticking is not None:
            self._ticking.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticking
        if self._connection is not None:
            await self._connection.close()

    async def _tick(self, message: AbstractIncomingMessage) -> None:
        leading = self.leading()
        self._until = time.monotonic() + self._lease
        if not leading:
            logger.info("scheduler {} leads: it fires the schedules now", self.name)
        await message.ack()

    def _lost(self, *_: Any) -> None:
        if self.leading():
            logger.info("scheduler {} lost the broker: it no longer fires", self.name)
        self._until = 0.0

    async def _keep_ticking(self, channel: aio_pika.abc.AbstractChannel) -> None:
        """Publish a tick every third of a lease, expiring with the lease (whoever leads hears it)."""
        expiration = self._lease
        while True:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(b"", expiration=expiration), routing_key=self._queue
                )
            except (*CONNECT_ERRORS, aiormq.exceptions.AMQPError, RuntimeError) as exc:
                # The connection is reopening: the next tick tries again.
                logger.debug("scheduler {} could not tick: {}", self.name, exc)
            await asyncio.sleep(self._lease / TICKS_PER_LEASE)

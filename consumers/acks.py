"""``Acker``: acks finished deliveries in runs, one ``basic.ack(multiple)`` per run of tags.

A worker finishes jobs in bursts (a batch of run finishes commits together), so the
deliveries it acks are mostly contiguous: one frame with ``multiple=True`` then settles the
whole run instead of one frame (and one socket write) per job. Tags finished out of order
behind a job still running are acked one by one, so they never hold prefetch credit while
a slow job sits at the head.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

import aiormq
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import AbstractChannel
from loguru import logger

_ACK_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)


@dataclass(slots=True)
class _Window:
    """One channel's deliveries that are not yet acked, by tag."""

    open: list[int] = field(default_factory=list)  # sorted: received, not yet acked or settled
    finished: set[int] = field(default_factory=set)  # ready to ack
    settled: set[int] = field(default_factory=set)  # acked alone, rejected or nacked already


class Acker:
    """Collects the deliveries a worker is done with and acks them together on the next loop turn."""

    def __init__(self) -> None:
        self._windows: dict[AbstractChannel, _Window] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._scheduled = False

    def received(self, message: AbstractIncomingMessage) -> None:
        """Track a delivery from the moment it arrives, so a multiple ack never covers it early."""
        channel = _channel(message)
        if channel is None:
            return
        window = self._windows.setdefault(channel, _Window())
        bisect.insort(window.open, _tag(message))

    def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack ``message`` with the next run (a lost ack only means a redelivery: at-least-once)."""
        channel = _channel(message)
        window = None if channel is None else self._windows.get(channel)
        if window is None:  # its channel closed: the broker redelivers it
            return
        window.finished.add(_tag(message))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def settle(self, message: AbstractIncomingMessage, *, requeue: bool | None) -> None:
        """Reject (``requeue=None``: dead-letter) or nack ``message`` now, and stop tracking it."""
        channel = _channel(message)
        window = None if channel is None else self._windows.get(channel)
        if window is None:  # its channel closed: the broker redelivers it
            return
        window.settled.add(_tag(message))
        try:
            if requeue is None:
                await message.reject(requeue=False)
            else:
                await message.nack(requeue=requeue)
        except _ACK_ERRORS as exc:
            logger.warning("a delivery was not settled, the broker will redeliver it: {}", exc)

    async def flush(self) -> None:
        """Send every ack collected so far, and wait for the writes."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self._flush()

    def _start_flush(self) -> None:
        self._scheduled = False
        previous = self._flushing

        async def run() -> None:
            if previous is not None:  # acks go out in order, one flush at a time
                await asyncio.gather(previous, return_exceptions=True)
            await self._flush()

        self._flushing = asyncio.get_running_loop().create_task(run())

    async def _flush(self) -> None:
        for channel, window in list(self._windows.items()):
            if channel.is_closed:  # its deliveries went back to the queue with it
                del self._windows[channel]
                continue
            try:
                await _send(channel, window)
            except _ACK_ERRORS as exc:
                logger.warning("acks not sent, the broker will redeliver those jobs: {}", exc)


async def _send(channel: AbstractChannel, window: _Window) -> None:
    """Ack the run of finished tags at the head of ``window`` at once, the rest one by one."""
    head = 0
    last_finished = None
    for tag in window.open:
        if tag in window.finished:
            last_finished = tag
        elif tag not in window.settled:
            break
        head += 1
    behind = [tag for tag in window.open[head:] if tag in window.finished]
    for tag in window.open[:head]:
        window.finished.discard(tag)
        window.settled.discard(tag)
    del window.open[:head]
    for tag in behind:
        window.finished.discard(tag)
        window.settled.add(tag)
    if last_finished is not None:
        await channel.basic_ack(last_finished, multiple=True)
    for tag in behind:
        await channel.basic_ack(tag)


def _channel(message: AbstractIncomingMessage) -> AbstractChannel | None:
    """Return the channel ``message`` came on, or ``None`` once that channel has closed."""
    try:
        return message.channel
    except aiormq.exceptions.ChannelInvalidStateError:
        return None


def _tag(message: AbstractIncomingMessage) -> int:
    if message.delivery_tag is None:
        raise ValueError("a message consumed with no_ack has nothing to ack")
    return message.delivery_tag

"""``Acks``: settles a worker's deliveries on their aiormq channels, a window at a time."""

# One basic.ack(multiple=True) settles the run of finished tags at the head of a channel's open
# tags (one frame for the run); finished tags behind a running job are acked one by one, so they
# hold no prefetch credit. Nacks and rejects go first, so a multiple ack never covers them.

from __future__ import annotations

from collections.abc import Sequence
from itertools import takewhile

import aiormq
from aiormq.abc import AbstractChannel
from loguru import logger

CHANNEL_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)
"""What a frame sent on a closed or closing channel raises."""


class Acks:
    """The open delivery tags of each channel, and the frames that settle them."""

    def __init__(self) -> None:
        # Per channel, the open tags in arrival (= tag) order; a dict keeps the order.
        self._open: dict[AbstractChannel, dict[int, None]] = {}

    def received(self, channel: AbstractChannel, tag: int) -> None:
        """Track a delivery from the moment it arrives, so a multiple ack never covers it early."""
        self._open.setdefault(channel, {})[tag] = None

    async def settle(
        self,
        done: Sequence[tuple[AbstractChannel, int]],
        requeue: Sequence[tuple[AbstractChannel, int]] = (),
        reject: Sequence[tuple[AbstractChannel, int]] = (),
    ) -> None:
        """Ack ``done``, nack ``requeue`` back to the queue, reject ``reject`` (dead-letter them)."""
        by_channel: dict[AbstractChannel, list[tuple[int, int]]] = {}
        for kind, pairs in ((0, requeue), (1, reject), (2, done)):
            for channel, tag in pairs:
                by_channel.setdefault(channel, []).append((kind, tag))
        for channel, settled in by_channel.items():
            tags = self._open.get(channel)
            if tags is None:
                continue
            try:
                await self._send(channel, tags, settled)
            except CHANNEL_ERRORS as exc:
                # At-least-once: the channel closed, and the broker requeued all it had not settled.
                logger.warning("deliveries not settled, the broker will redeliver them: {}", exc)
                self._open.pop(channel, None)
        for channel in [c for c in self._open if c.is_closed]:
            del self._open[channel]  # its deliveries went back to the queue with it

    async def _send(
        self, channel: AbstractChannel, tags: dict[int, None], settled: list[tuple[int, int]]
    ) -> None:
        finished: set[int] = set()
        for kind, tag in settled:
            if kind == 2:
                finished.add(tag)
                continue
            tags.pop(tag, None)
            if kind == 0:
                await channel.basic_nack(tag, requeue=True, wait=False)
            else:
                await channel.basic_reject(tag, requeue=False, wait=False)
        head = list(takewhile(finished.__contains__, tags))  # the finished run at the head
        for tag in head:
            del tags[tag]
        finished.difference_update(head)
        if head:
            await channel.basic_ack(head[-1], multiple=True, wait=False)
        for tag in sorted(finished):
            tags.pop(tag, None)
            await channel.basic_ack(tag, wait=False)

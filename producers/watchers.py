"""Fan job status events from the events exchange out to the watchers of every door, within limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from producers.events import decode_event
from producers.tenancy import Viewer
from topology.compiled import CompiledTopology
from topology.names import DEFAULT_TENANT

QUEUE_LIMIT = 256


@dataclass(eq=False, slots=True)
class Watcher:
    """One subscriber: events of its viewer's jobs matching its job id or type land in its queue."""

    viewer: Viewer = field(default_factory=Viewer)
    job_id: str | None = None
    job_type: str | None = None
    events: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )

    def wants(self, event: dict[str, Any]) -> bool:
        """Return whether this watcher follows the event's job (never another tenant's)."""
        if not self.viewer.sees(event.get("tenant", DEFAULT_TENANT), str(event.get("type"))):
            return False
        if self.job_id is not None:
            return bool(event.get("id") == self.job_id)
        return self.job_type is None or event.get("type") == self.job_type


class EventHub:
    """Delivers every status event this process hears to the watchers that want it."""

    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self._lock = asyncio.Lock()
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def watchers(self) -> int:
        """Return how many watchers are registered now."""
        return len(self._watchers)

    @asynccontextmanager
    async def watch(
        self, viewer: Viewer, *, job_id: str | None = None, job_type: str | None = None
    ) -> AsyncIterator[Watcher]:
        """Register a watcher of ``viewer``'s jobs for the duration of the block."""
        watcher = Watcher(viewer=viewer, job_id=job_id, job_type=job_type)
        async with self._lock:
            if not self._watchers and self._queue is not None and self._exchange is not None:
                # Bound only while someone watches: an idle replica pays nothing per event.
                await self._queue.bind(self._exchange, "#")
            self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            async with self._lock:
                self._watchers.discard(watcher)
                if not self._watchers and self._queue is not None and self._exchange is not None:
                    await self._queue.unbind(self._exchange, "#")

    async def attach(
        self, connection: AbstractRobustConnection, topology: CompiledTopology
    ) -> None:
        """Start consuming status events from the broker on ``connection``."""
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        self._exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
        self._queue = queue

        async def on_message(message: AbstractIncomingMessage) -> None:
            event = decode_event(message.body)
            if event is None:
                return
            for watcher in self._watchers:
                if watcher.wants(event):
                    with contextlib.suppress(asyncio.QueueFull):  # a full watcher loses it
                        watcher.events.put_nowait(event)

        await queue.consume(on_message, no_ack=True)

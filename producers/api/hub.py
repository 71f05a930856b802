"""Fan job status events from the events exchange out to WebSocket watchers, within limits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from starlette.websockets import WebSocket, WebSocketDisconnect

from producers.events import decode_event
from producers.tenancy import Viewer
from topology.compiled import CompiledTopology
from topology.names import DEFAULT_TENANT
from topology.settings import ApiSettings

QUEUE_LIMIT = 256
TOO_BIG = 1009  # RFC 6455: a message too big to process
IDLE = 4408  # nothing moved for the idle timeout; reconnect to go on


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


async def pump(
    websocket: WebSocket, watcher: Watcher, *, final: Callable[[dict[str, Any]], bool]
) -> None:
    """Send the watcher's events until ``final(event)``, the client leaves, or a limit is hit."""
    settings: ApiSettings = websocket.app.state.api_settings
    idle_timeout = settings.ws_idle_timeout
    active = [time.monotonic()]  # when the client last spoke, or was last sent an event
    reader = asyncio.create_task(_read(websocket, active, settings.ws_max_frame_bytes))
    try:
        while True:
            getter = asyncio.ensure_future(watcher.events.get())
            done, _ = await asyncio.wait(
                {reader, getter},
                timeout=max(0.0, active[0] + idle_timeout - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
            if reader in done:
                if reader.exception() is None and reader.result():
                    await _close(websocket, TOO_BIG, "frame over the size limit")
                return
            if getter in done:
                event = getter.result()
                await websocket.send_json(event)
                active[0] = time.monotonic()
                if final(event):
                    await _close(websocket, 1000, "")
                    return
            elif time.monotonic() - active[0] >= idle_timeout:
                await _close(websocket, IDLE, "idle timeout")
                return
    except WebSocketDisconnect:
        return
    finally:
        reader.cancel()


async def _read(websocket: WebSocket, active: list[float], max_frame: int) -> bool:
    """Read what the client sends (nothing is expected); return whether a frame overstepped."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return False
        size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
        if size > max_frame:
            return True
        active[0] = time.monotonic()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client left first
        await websocket.close(code=code, reason=reason)

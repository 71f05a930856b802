"""A WebSocket stream of job events with limits: frame size, idle time, and no leaked watchers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from producers.api.hub import Watcher

TOO_BIG = 1009  # RFC 6455: a message too big to process
IDLE = 4408  # nothing moved for the idle timeout; reconnect to go on


@dataclass(slots=True)
class _Client:
    """What the reader saw of the client: when it last spoke, and why it stopped."""

    seen: float = field(default_factory=time.monotonic)
    ended: str | None = None


async def pump(
    websocket: WebSocket,
    watcher: Watcher,
    *,
    final: Callable[[dict[str, Any]], bool],
    max_frame: int,
    idle_timeout: float,
) -> None:
    """Send the watcher's events until ``final(event)``, the client leaves, or a limit is hit."""
    client = _Client()
    reader = asyncio.create_task(_read(websocket, client, max_frame))
    sent = time.monotonic()
    try:
        while True:
            quiet = time.monotonic() - max(sent, client.seen)
            getter = asyncio.ensure_future(watcher.events.get())
            done, _ = await asyncio.wait(
                {reader, getter},
                timeout=max(0.0, idle_timeout - quiet),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
            if reader in done:
                if client.ended == "too_big":
                    await _close(websocket, TOO_BIG, "frame over the size limit")
                return
            if getter not in done:
                if time.monotonic() - max(sent, client.seen) >= idle_timeout:
                    await _close(websocket, IDLE, "idle timeout")
                    return
                continue
            event = getter.result()
            await websocket.send_json(event)
            sent = time.monotonic()
            if final(event):
                await _close(websocket, 1000, "")
                return
    except WebSocketDisconnect:
        return
    finally:
        reader.cancel()


async def _read(websocket: WebSocket, client: _Client, max_frame: int) -> None:
    """Read what the client sends (nothing is expected) until it leaves or oversteps."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            client.ended = "gone"
            return
        size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
        if size > max_frame:
            client.ended = "too_big"
            return
        client.seen = time.monotonic()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client left first
        await websocket.close(code=code, reason=reason)

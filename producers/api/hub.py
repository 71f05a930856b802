"""Stream a watcher's job status events to a WebSocket, within the API's limits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from producers.watchers import Watcher
from topology.settings import ApiSettings

TOO_BIG = 1009  # RFC 6455: a message too big to process
IDLE = 4408  # nothing moved for the idle timeout; reconnect to go on


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

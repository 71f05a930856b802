"""Server-Sent Events: the frames, and a response that streams them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

# A stream ends after this; the browser reconnects, and the session is checked again.
STREAM_S = 600.0
KEEPALIVE_S = 15.0  # a comment this often keeps proxies from closing a quiet stream
RETRY_MS = 3000  # how long a browser waits before it reconnects


def frame(event: str, data: Any) -> bytes:
    """Return one event: its name and its data as one line of JSON."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


def stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Return a response that sends ``events`` as they come (the client leaving cancels them)."""

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        async for event in events:
            yield event

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

"""What the server refuses before the app reads a request: slow, oversized or endless input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import orjson
import uvicorn
from fastapi import FastAPI
from loguru import logger
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from producers.api.problems import problem, problem_body
from topology import limits
from topology.settings import ApiSettings
from topology.tls import api_context

Limit = Callable[[Scope], int]


class BodyLimit:
    """Answers 413 when a request body exceeds its limit, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: Limit) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body, or answer 413."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        try:
            declared: int | None = int(Headers(scope=scope)["content-length"])
        except (KeyError, ValueError):
            declared = None
        if declared is not None:
            if declared > limit:
                await _too_large(scope, receive, send, limit)
                return
            # The server enforces Content-Length framing, so a body within its declared
            # length is within the limit: pass it through untouched (the common case).
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _too_large(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    detail = f"the request body is larger than {limit} bytes"
    await problem(413, detail, headers={"Connection": "close"})(scope, receive, send)


class _Refused(Exception):
    """Raised in a parser callback to stop reading a request that broke a limit."""


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 408, 414 or 431 to what breaks the ``limits`` it lacks."""

    # Checks are counters and one timer per phase, so a well-behaved request pays next to nothing.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] = (400, "the request is not valid HTTP/1.1")
        self._timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection with the head deadline running."""
        super().connection_made(transport)
        self._arm(limits.HEAD_TIMEOUT_S, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadlines of a connection that ended."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, answering a request that breaks a limit."""
        self._unset_keepalive_if_required()
        if self.parser is None:
            return
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._body_seen = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(*self._refusal)
            return
        if self._in_head and self._head_bytes > limits.MAX_HEAD_BYTES:
            self._refuse(431, f"the request head is over {limits.MAX_HEAD_BYTES} bytes")

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol, which keeps deadlines of its own."""
        self._disarm()
        super().handle_websocket_upgrade()

    def on_url(self, url: bytes) -> None:
        """Collect the URL, refusing one over the limit."""
        super().on_url(url)
        if len(self.url) > limits.MAX_REQUEST_LINE_BYTES:
            self._refusal = (414, f"the URL is over {limits.MAX_REQUEST_LINE_BYTES} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header field, refusing one too many or too long."""
        self._header_count += 1
        if self._header_count > limits.MAX_HEADERS:
            self._refusal = (431, f"the request has over {limits.MAX_HEADERS} header fields")
            raise _Refused
        if len(name) + len(value) > limits.MAX_REQUEST_LINE_BYTES:
            self._refusal = (431, f"a header field is over {limits.MAX_REQUEST_LINE_BYTES} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Start the request; from here on its body must keep flowing."""
        self._in_head = False
        self._head_bytes = self._header_count = 0
        self._body_seen = self.loop.time()
        self._arm(limits.BODY_IDLE_TIMEOUT_S, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """End the body; the next request's head has its deadline from now."""
        self._in_head = True
        self._arm(limits.HEAD_TIMEOUT_S, self._head_late)
        super().on_message_complete()

    def _head_late(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy or (self._head_bytes == 0 and self.cycle is not None):
            # Answering the last request, or idle between requests (keep-alive ends that).
            self._arm(limits.HEAD_TIMEOUT_S, self._head_late)
        elif self._head_bytes == 0:
            self.transport.close()  # connected and never sent a byte
        else:
            self._refuse(408, f"the request head took over {limits.HEAD_TIMEOUT_S:.0f} s")

    def _body_late(self) -> None:
        idle = self.loop.time() - self._body_seen
        if idle < limits.BODY_IDLE_TIMEOUT_S:
            self._arm(limits.BODY_IDLE_TIMEOUT_S - idle, self._body_late)
            return
        self._refuse(408, f"the request body paused for over {limits.BODY_IDLE_TIMEOUT_S:.0f} s")

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` (unless a response started), close, and release the app's read."""
        self._disarm()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info("refused a request from {}: {} ({})", client, status, detail)
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if not self.transport.is_closing() and not started:
            body = orjson.dumps(problem_body(status, detail))
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                f"content-type: application/problem+json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says the client is gone
            cycle.message_event.set()
        self.transport.close()


def server_config(app: FastAPI, settings: ApiSettings) -> uvicorn.Config:
    """Return how uvicorn serves ``app``: its address, TLS, the guarded protocol and its limits."""
    # No access log: /metrics counts every request by route and status, and a line per
    # request costs more than the request. No log config either: uvicorn's loggers
    # propagate to the root, whose one handler passes them on to loguru. WebSocket frames
    # are bounded by the protocol layer too, before they are buffered; keep-alive is short
    # so idle connections and drains on SIGTERM end quickly.
    # The TLS context is built here, so a bad certificate setting fails before serving starts.
    context = api_context(settings)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=GuardedHttp,
        timeout_keep_alive=5,
        access_log=False,
        log_config=None,
        ws_max_size=settings.ws_max_frame_bytes,
        ssl_context_factory=None if context is None else lambda _config, _default: context,
    )

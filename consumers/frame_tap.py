"""``DeliveryTap``: cuts a worker's deliveries out of its connection's bytes before aiormq parses them (why: docs/performance.md)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from pamqp.header import ContentHeader
from yarl import URL

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_TAG = struct.Struct(">QB")  # delivery tag, redelivered
_SIZE = struct.Struct(">Q")  # a content header's body size, after class id and weight
_DELIVER = b"\x00\x3c\x00\x3c"  # Basic.Deliver: class 60, method 60
_METHOD, _HEADER, _BODY, _BEAT = 1, 2, 3, 8
_KINDS = frozenset((_METHOD, _HEADER, _BODY, _BEAT))
_FRAME_END = 0xCE
# aiormq drops a connection it has heard nothing from for three heartbeat intervals; while the
# tap takes every frame, a heartbeat frame (which aiormq ignores) tells it the peer is alive.
_ALIVE = struct.pack(">BHIB", _BEAT, 0, 0, _FRAME_END)
_ALIVE_EVERY_S = 1.0


@dataclass(slots=True)
class Properties:
    """A delivery's content header, kept raw; its headers decoded when read."""

    raw: bytes

    @property
    def headers(self) -> dict[str, Any] | None:
        """Return the message's headers table (None when it has none)."""
        header = ContentHeader()
        header.unmarshal(self.raw)
        headers: dict[str, Any] | None = header.properties.headers
        return headers


Sink = Callable[[AbstractChannel, int, Properties, bytes], None]
"""Takes a delivery: its channel, delivery tag, properties and body. It must not raise."""


@dataclass(slots=True)
class _Route:
    """One consuming channel: its consumers' sinks, and the delivery whose frames are coming."""

    channel: AbstractChannel
    sinks: dict[bytes, Sink] = field(default_factory=dict)
    sink: Sink | None = None  # the delivery in progress goes here
    tag: int = 0
    properties: Properties | None = None
    size: int = 0
    body: list[bytes] = field(default_factory=list)
    got: int = 0

    def take(self, kind: int, frame: bytes, start: int, end: int) -> bool:
        """Take the frame at ``frame[start:end]`` if it belongs to one of our deliveries."""
        if self.sink is None:
            if kind != _METHOD or frame[start : start + 4] != _DELIVER:
                return False
            length = frame[start + 4]
            sink = self.sinks.get(frame[start + 5 : start + 5 + length])
            if sink is None:
                return False
            self.sink = sink
            self.tag = _TAG.unpack_from(frame, start + 5 + length)[0]
            self.properties = None
            return True
        if self.properties is None:
            if kind != _HEADER:
                return self._broken()
            self.properties = Properties(frame[start:end])
            self.size = _SIZE.unpack_from(frame, start + 4)[0]
            self.body, self.got = [], 0
        elif kind == _BODY:
            self.body.append(frame[start:end])
            self.got += end - start
        else:
            return self._broken()
        if self.got >= self.size:
            sink, self.sink = self.sink, None
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            sink(self.channel, self.tag, self.properties, body)
        return True

    def _broken(self) -> bool:
        # Not what AMQP allows on a channel mid-delivery: let aiormq see it and close the channel.
        self.sink = None
        return False


class _Tap:
    """The connection's protocol seen first: cuts the routed frames out, passes the rest on."""

    def __init__(self, inner: asyncio.Protocol, routes: dict[int, _Route]) -> None:
        self._inner = inner
        self._routes = routes
        self._pending = b""
        self._framed = True  # False once the stream is not AMQP frames: all of it goes to aiormq
        self._loop = asyncio.get_running_loop()
        self._heard = self._loop.time()  # when aiormq last got a frame

    def data_received(self, data: bytes) -> None:
        if not self._framed:
            self._inner.data_received(data)
            return
        buffer = self._pending + data if self._pending else data
        size, position, passed = len(buffer), 0, []
        routes = self._routes
        while size - position >= 8:
            kind, channel, length = _HEAD.unpack_from(buffer, position)
            end = position + 7 + length
            if kind not in _KINDS or (end < size and buffer[end] != _FRAME_END):
                # Not a frame (a refused protocol header, or garbage): aiormq reports it.
                self._framed = False
                passed.append(buffer[position:])
                position = size
                break
            if end >= size:
                break
            route = routes.get(channel)
            if route is None or not route.take(kind, buffer, position + 7, end):
                passed.append(buffer[position : end + 1])
            position = end + 1
        self._pending = buffer[position:]
        now = self._loop.time()
        if not passed and now - self._heard > _ALIVE_EVERY_S:
            passed.append(_ALIVE)
        if passed:
            self._heard = now
            self._inner.data_received(passed[0] if len(passed) == 1 else b"".join(passed))

    def connection_lost(self, exc: Exception | None) -> None:
        self._routes.clear()
        self._inner.connection_lost(exc)

    def __getattr__(self, name: str) -> Any:
        # Every other protocol callback (connection_made, eof_received, pause_writing...)
        # goes to aiormq's protocol as it is.
        return getattr(self._inner, name)


class DeliveryTap(TransportFactory):
    """Opens the connection's transports (TCP or TLS, as aiormq would) with the tap in front."""

    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}  # by channel number, on the current transport

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a transport to ``url`` and put the tap in front of its protocol."""
        opener = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await opener.create(url, **kwargs)
        # A new transport (a reconnect) has new channels: routes start empty.
        self._routes = {}
        transport = writer.transport
        transport.set_protocol(_Tap(transport.get_protocol(), self._routes))  # type: ignore[arg-type]
        return reader, writer

    def route(self, channel: AbstractChannel, consumer_tag: str, sink: Sink) -> None:
        """Send the deliveries to ``consumer_tag`` on ``channel`` to ``sink`` (before consuming)."""
        number = channel.number
        route = self._routes.get(number)
        if route is None or route.channel is not channel:
            route = self._routes[number] = _Route(channel)
        route.sinks[consumer_tag.encode()] = sink

"""``FrameTap``: a connection's bytes seen before aiormq parses them, and written without its queue."""

# Deliveries and confirms, cut out of the stream, skip aiormq's reader tasks and frame objects;
# a publish written straight to the transport skips its writer task (docs/performance.md).

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from aiormq.abc import AbstractChannel
from aiormq.connection import TransportFactory
from yarl import URL

from topology.broker import plain_transport

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD_ID = struct.Struct(">HH")  # a method frame's class and method
_CONNECTION, _BLOCKED, _UNBLOCKED = 10, 60, 61
METHOD, HEADER, BODY, _BEAT = 1, 2, 3, 8
_KINDS = frozenset((METHOD, HEADER, BODY, _BEAT))
_FRAME_END = 0xCE
# aiormq drops a connection it has heard nothing from for three heartbeat intervals; while the
# tap takes every frame, a heartbeat frame (which aiormq ignores) tells it the peer is alive.
_ALIVE = struct.pack(">BHIB", _BEAT, 0, 0, _FRAME_END)
_ALIVE_EVERY_S = 1.0


class Route(Protocol):
    """Takes the frames of one channel that it handles itself."""

    @property
    def channel(self) -> AbstractChannel:
        """Return the aiormq channel whose frames this route sees."""
        ...

    def take(self, kind: int, frame: bytes, start: int, end: int) -> bool:
        """Take the frame at ``frame[start:end]``, or return False to pass it to aiormq."""
        ...


@dataclass(slots=True)
class Alarm:
    """Whether the broker blocks this connection's publishers now (a memory or disk alarm)."""

    blocked: bool = False
    reason: str = ""


class _Tap:
    """The connection's protocol seen first: cuts the routed frames out, passes the rest on."""

    def __init__(
        self, inner: asyncio.Protocol, routes: dict[int, Route], alarm: Alarm | None = None
    ) -> None:
        self._inner = inner
        self._routes = routes
        self._alarm = alarm or Alarm()
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
                if channel == 0 and kind == METHOD:
                    self._watch(buffer, position + 7)
                passed.append(buffer[position : end + 1])
            position = end + 1
        self._pending = buffer[position:]
        now = self._loop.time()
        if not passed and now - self._heard > _ALIVE_EVERY_S:
            passed.append(_ALIVE)
        if passed:
            self._heard = now
            self._inner.data_received(passed[0] if len(passed) == 1 else b"".join(passed))

    def _watch(self, frame: bytes, start: int) -> None:
        """Note a ``connection.blocked`` or ``connection.unblocked`` the broker sent (aiormq still gets it)."""
        # https://www.rabbitmq.com/docs/connection-blocked: sent while a resource alarm stops
        # publishers, and the publishes it holds back get no confirm until it ends.
        class_id, method_id = _METHOD_ID.unpack_from(frame, start)
        if class_id != _CONNECTION:
            return
        if method_id == _BLOCKED:
            size = frame[start + 4] if len(frame) > start + 4 else 0
            self._alarm.blocked = True
            self._alarm.reason = frame[start + 5 : start + 5 + size].decode("utf-8", "replace")
        elif method_id == _UNBLOCKED:
            self._alarm.blocked = False
            self._alarm.reason = ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._routes.clear()
        self._inner.connection_lost(exc)

    def __getattr__(self, name: str) -> Any:
        # Every other protocol callback (connection_made, eof_received, pause_writing...)
        # goes to aiormq's protocol as it is.
        return getattr(self._inner, name)


class FrameTap(TransportFactory):
    """Opens a connection's transports (TCP or TLS, as aiormq would) with the tap in front."""

    def __init__(self) -> None:
        self._routes: dict[int, Route] = {}  # by channel number, on the current transport
        self._writer: asyncio.StreamWriter | None = None
        self.alarm = Alarm()  # of the current transport

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a transport to ``url`` and put the tap in front of its protocol."""
        reader, writer = await plain_transport(url).create(url, **kwargs)
        # A new transport (a reconnect) has new channels: routes start empty.
        self._routes = {}
        self._writer = writer
        # A new connection starts unblocked: the broker tells it at once if an alarm is on.
        self.alarm = Alarm()
        transport = writer.transport
        tap = _Tap(transport.get_protocol(), self._routes, self.alarm)  # type: ignore[arg-type]
        transport.set_protocol(tap)  # type: ignore[arg-type]
        return reader, writer

    def routed(self, channel: AbstractChannel) -> Route | None:
        """Return the route taking ``channel``'s frames on the current transport, if any."""
        route = self._routes.get(channel.number)
        return route if route is not None and route.channel is channel else None

    def route(self, route: Route) -> None:
        """Send the frames ``route`` handles to it (before they can arrive)."""
        self._routes[route.channel.number] = route

    def write(self, channel: AbstractChannel, payload: bytes) -> bool:
        """Write ``payload`` (frames of a routed ``channel``) to the socket now, or return False to queue it in aiormq."""
        # Queued when frames wait there (they go in order), the channel is not routed on this
        # transport, or it closes.
        writer = self._writer
        if (
            writer is None
            or not channel.connection.write_queue.empty()
            or self.routed(channel) is None
            or writer.transport.is_closing()
        ):
            return False
        writer.write(payload)
        return True

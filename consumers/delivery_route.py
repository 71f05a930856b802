"""``DeliveryRoute``: a worker's deliveries cut out of its connection's bytes whole (see ``FrameTap``)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel
from pamqp.header import ContentHeader

from producers.frame_tap import BODY, HEADER, METHOD, FrameTap

_TAG = struct.Struct(">QB")  # delivery tag, redelivered
_SIZE = struct.Struct(">Q")  # a content header's body size, after class id and weight
_DELIVER = b"\x00\x3c\x00\x3c"  # Basic.Deliver: class 60, method 60


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
class DeliveryRoute:
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
            if kind != METHOD or frame[start : start + 4] != _DELIVER:
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
            if kind != HEADER:
                return self._broken()
            self.properties = Properties(frame[start:end])
            self.size = _SIZE.unpack_from(frame, start + 4)[0]
            self.body, self.got = [], 0
        elif kind == BODY:
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


def route_deliveries(
    tap: FrameTap, channel: AbstractChannel, consumer_tag: str, sink: Sink
) -> None:
    """Send the deliveries to ``consumer_tag`` on ``channel`` to ``sink`` (before consuming)."""
    route = tap.routed(channel)
    if not isinstance(route, DeliveryRoute):
        route = DeliveryRoute(channel)
        tap.route(route)
    route.sinks[consumer_tag.encode()] = sink

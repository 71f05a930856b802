"""Publishes written as AMQP 0-9-1 frames straight onto an aiormq channel, and their confirms read back."""

# The one module that reaches past aiormq's public API: what ``Channel.basic_publish`` and the
# channel's reader do, for a window of messages at once at a fraction of the cost (why:
# docs/performance.md). A test pins the aiormq version it was written against.

from __future__ import annotations

import asyncio
import functools
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import encode
from pamqp.header import ContentHeader

from producers.frame_tap import BODY, HEADER, METHOD, FrameTap

AIORMQ_VERSION: Final = "7.2.4"

_FRAME_END: Final = b"\xce"
_FRAME = struct.Struct(">BHI")
_PUBLISH = struct.Struct(">HHH")  # Basic.Publish: class 60, method 40, reserved
_CONTENT = struct.Struct(">HHQ")  # class 60, weight 0, body size (the property flags follow)
_SHORTSTR_MAX: Final = 255
_ACK, _NACK = b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78"  # Basic.Ack, Basic.Nack
_RETURN = b"\x00\x3c\x00\x32"  # Basic.Return: reply code, reply text, exchange, routing key
_TAG_FLAGS = struct.Struct(">QB")  # an ack's or nack's delivery tag, then its bits (multiple)
_BODY_SIZE = struct.Struct(">Q")  # in a content header, after class id and weight

# Basic property flags (AMQP 0-9-1, section 4.2.6.1), in the order the values follow them.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _PRIORITY = 0x8000, 0x2000, 0x1000, 0x0800
_CORRELATION_ID, _MESSAGE_ID, _TIMESTAMP, _TYPE = 0x0400, 0x0080, 0x0040, 0x0020


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish, encoded: its ``Basic.Publish`` method, properties and body."""

    method: bytes  # from ``encode_publish``
    properties: bytes  # from ``encode_properties``
    body: bytes
    message_id: str = ""  # names a returned message: unique among those in flight


def outgoing(
    exchange: str,
    routing_key: str,
    properties: bytes,
    body: bytes,
    message_id: str = "",
    *,
    mandatory: bool = True,
) -> Outgoing:
    """Return the message publishing ``body`` (``ValueError``: a name over 255 bytes in UTF-8)."""
    return Outgoing(encode_publish(exchange, routing_key, mandatory), properties, body, message_id)


@functools.lru_cache(maxsize=4096)
def encode_publish(exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """Return the payload of a ``Basic.Publish`` method frame (remembered: the keys repeat)."""
    return b"".join(
        (
            _PUBLISH.pack(60, 40, 0),
            shortstr(exchange, "exchange"),
            shortstr(routing_key, "routing key"),
            b"\x01" if mandatory else b"\x00",
        )
    )


def shortstr(value: str, field: str) -> bytes:
    """Return ``value`` as an AMQP short string (``ValueError`` naming ``field`` when too long)."""
    data = value.encode()
    if len(data) > _SHORTSTR_MAX:
        raise ValueError(f"{field} is {len(data)} bytes in UTF-8; AMQP allows at most 255")
    return bytes((len(data),)) + data


def encode_properties(
    *,
    content_type: str,
    delivery_mode: int,
    message_id: str | None = None,
    headers: bytes = b"",
    priority: int | None = None,
    correlation_id: str | None = None,
    timestamp: int | None = None,
    type: str | None = None,
) -> bytes:
    """Return the property flags and values of a content header (``headers`` from ``encode_table``)."""
    flags = _CONTENT_TYPE | _DELIVERY_MODE
    parts = [b"", shortstr(content_type, "content_type")]
    if headers:
        flags |= _HEADERS
        parts.append(headers)
    parts.append(bytes((delivery_mode,)))
    if priority is not None:
        flags |= _PRIORITY
        parts.append(bytes((priority,)))
    if correlation_id is not None:
        flags |= _CORRELATION_ID
        parts.append(shortstr(correlation_id, "correlation_id"))
    if message_id is not None:
        flags |= _MESSAGE_ID
        parts.append(shortstr(message_id, "message_id"))
    if timestamp is not None:
        flags |= _TIMESTAMP
        parts.append(timestamp.to_bytes(8, "big"))
    if type is not None:
        flags |= _TYPE
        parts.append(shortstr(type, "type"))
    parts[0] = flags.to_bytes(2, "big")
    return b"".join(parts)


def encode_table(table: Mapping[str, Any]) -> bytes:
    """Return ``table`` as an AMQP field table (pamqp's encoding, as aiormq would send it)."""
    return encode.field_table(dict(table))


def publish_frames(channel: int, max_body: int, message: Outgoing) -> bytes:
    """Return the method, content header and body frames of one publish on ``channel``."""
    method = message.method
    header = _CONTENT.pack(60, 0, len(message.body)) + message.properties
    parts = [
        _FRAME.pack(METHOD, channel, len(method)),
        method,
        _FRAME_END,
        _FRAME.pack(HEADER, channel, len(header)),
        header,
        _FRAME_END,
    ]
    body = message.body
    for start in range(0, len(body), max_body):
        chunk = body[start : start + max_body]
        parts += (_FRAME.pack(BODY, channel, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Sent:
    """Messages written on a confirm channel: the future of each one's confirm, in order."""

    channel: aiormq.Channel
    first_tag: int
    messages: Sequence[Outgoing]
    confirms: list[asyncio.Future[Any]]

    def forget(self) -> None:
        """Drop the messages from the channel's table of returnable ones (once confirmed or abandoned)."""
        tags = self.channel.message_id_delivery_tag
        for tag, message in enumerate(self.messages, self.first_tag):
            if tags.get(message.message_id) == tag:
                del tags[message.message_id]


async def publish_confirmed(
    tap: FrameTap, channel: aiormq.Channel, messages: Sequence[Outgoing]
) -> Sent:
    """Write ``messages`` on a confirm channel routed to ``Confirms`` on ``tap``; return the futures of their confirms."""
    # A future fails with ``Returned``, ``Nacked`` or the channel's close reason; call
    # ``Sent.forget`` once they are done or abandoned.
    payload = _frames(channel, messages)
    # Delivery tags are numbered in the order the frames reach the socket, so nothing else may
    # be written to this channel between taking the tags and writing: basic_publish holds the
    # channel's lock for that. When nobody holds it and the tap writes at once, nothing yields
    # in between, which is all the lock would guarantee.
    if not channel.is_closed and not channel._Channel__lock.locked():  # type: ignore[attr-defined]
        sent = _tagged(channel, messages)
        try:
            if tap.write(channel, payload):
                return sent
        except BaseException:
            _untag(sent)
            raise
        _untag(sent)
    async with channel.lock:
        sent = _tagged(channel, messages)
        try:
            if not tap.write(channel, payload):
                await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        except BaseException:
            _untag(sent)  # never written: give the tags back while the lock keeps them ours
            raise
    return sent


def _tagged(channel: aiormq.Channel, messages: Sequence[Outgoing]) -> Sent:
    """Take the channel's next delivery tags for ``messages`` with a confirm future each."""
    first = channel.delivery_tag + 1
    confirms: list[asyncio.Future[Any]] = []
    confirmations, tags = channel.confirmations, channel.message_id_delivery_tag
    for tag, message in enumerate(messages, first):
        future = channel.create_future()  # rejected by aiormq if the channel closes
        confirmations[tag] = future
        tags[message.message_id] = tag
        confirms.append(future)
    channel.delivery_tag = first + len(messages) - 1
    return Sent(channel, first, messages, confirms)


def _untag(sent: Sent) -> None:
    """Give back the tags ``_tagged`` took, none of whose messages was written."""
    sent.channel.delivery_tag = sent.first_tag - 1
    for tag in range(sent.first_tag, sent.first_tag + len(sent.messages)):
        sent.channel.confirmations.pop(tag, None)
    sent.forget()


async def publish_unconfirmed(channel: aiormq.Channel, messages: Sequence[Outgoing]) -> None:
    """Write ``messages`` on a channel without confirms in one go (fire and forget)."""
    # Such a channel keeps no per-message state, so no aiormq bookkeeping is skipped.
    await channel.write_queue.put(
        ChannelFrame(payload=_frames(channel, messages), should_close=False)
    )


def _frames(channel: aiormq.Channel, messages: Sequence[Outgoing]) -> bytes:
    number, max_body = channel.number, channel.max_content_size
    return b"".join([publish_frames(number, max_body, m) for m in messages])


class Deadlines:
    """Fails the confirms still awaited once their timeout passed, with one timer for them all."""

    # A timer per publish (``asyncio.timeout``) costs a heap entry, cancelled and left behind
    # for every confirm that came in time, on the path of every single publish.

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._awaited: deque[tuple[float, list[asyncio.Future[Any]]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, confirms: list[asyncio.Future[Any]]) -> None:
        """Fail each of ``confirms`` not settled within the timeout with ``TimeoutError``."""
        awaited = self._awaited
        while awaited and all(map(_done, awaited[0][1])):  # settled in time: forget them
            awaited.popleft()
        loop = asyncio.get_running_loop()
        due = loop.time() + self._timeout
        awaited.append((due, confirms))
        if self._timer is None:
            self._timer = loop.call_at(due, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        awaited, now = self._awaited, loop.time()
        while awaited and awaited[0][0] <= now:
            for confirm in awaited.popleft()[1]:
                if not confirm.done():
                    confirm.set_exception(TimeoutError())
        self._timer = loop.call_at(awaited[0][0], self._expire, loop) if awaited else None


_done = asyncio.Future.done


class Returned(Exception):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class Nacked(Exception):
    """The broker refused a message it was asked to confirm."""


class Confirms:
    """A confirm channel's route on its ``FrameTap``: acks, nacks and returns settle the confirms."""

    def __init__(self, channel: aiormq.Channel) -> None:
        self.channel = channel
        self._returned: Returned | None = None  # a return whose content frames are coming
        self._message_id: str | None = None
        self._left = -1  # body bytes of the returned message still to come; -1: its header

    def take(self, kind: int, frame: bytes, start: int, end: int) -> bool:
        """Take the broker's ack, nack or return (with its content) of a publish on the channel."""
        if self._returned is not None:
            return self._take_returned(kind, frame, start, end)
        if kind != METHOD:
            return False
        method = frame[start : start + 4]
        if method in (_ACK, _NACK):
            tag, bits = _TAG_FLAGS.unpack_from(frame, start + 4)
            self._settle(tag, bool(bits & 1), None if method == _ACK else Nacked)
            return True
        if method == _RETURN:
            length = frame[start + 6]
            text = frame[start + 7 : start + 7 + length].decode(errors="replace")
            code = int.from_bytes(frame[start + 4 : start + 6])
            self._returned, self._message_id, self._left = Returned(f"{code} {text}"), None, -1
            return True
        return False

    def _take_returned(self, kind: int, frame: bytes, start: int, end: int) -> bool:
        if self._left < 0:
            if kind != HEADER:
                self._returned = None  # not what AMQP allows: aiormq closes the channel
                return False
            header = ContentHeader()
            header.unmarshal(frame[start:end])
            self._message_id = header.properties.message_id
            self._left = _BODY_SIZE.unpack_from(frame, start + 4)[0]
        elif kind == BODY:
            self._left -= end - start
        else:
            self._returned = None
            return False
        if self._left <= 0:
            returned, self._returned = self._returned, None
            tag = self.channel.message_id_delivery_tag.get(self._message_id or "")
            future = self.channel.confirmations.get(tag) if tag is not None else None
            # Failed now and left in place: the broker's ack for the tag follows and finds it done.
            if future is not None and returned is not None and not future.done():
                future.set_exception(returned)
        return True

    def _settle(self, tag: int, multiple: bool, refusal: type[Nacked] | None) -> None:
        confirmations = self.channel.confirmations
        for settled in [t for t in confirmations if t <= tag] if multiple else (tag,):
            future = confirmations.pop(settled, None)
            if future is None or future.done():  # returned, or abandoned (a timeout)
                continue
            if refusal is None:
                future.set_result(None)
            else:
                future.set_exception(refusal(f"delivery tag {settled}"))

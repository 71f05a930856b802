"""The wire adapter: frames decoded by pamqp, and its reach into aiormq checked on a real channel.

``producers.wire`` uses aiormq's channel internals; these tests fail loudly when the installed
aiormq is not the version it was written against, or when those internals behave otherwise.
"""

from __future__ import annotations

import asyncio
import datetime
from importlib.metadata import version

import aiormq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, frame, header
from pamqp.body import ContentBody

from producers import wire
from producers.frame_tap import FrameTap, _Tap
from tests.broker import channel, depth, next_message
from topology.settings import BrokerSettings

short_text = st.text(max_size=40)
header_values = st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=20))


def decode(data: bytes) -> list[tuple[int, object]]:
    """Return every (channel, frame) in ``data``."""
    frames, offset = [], 0
    while offset < len(data):
        used, number, decoded = frame.unmarshal(data[offset:])
        frames.append((number, decoded))
        offset += used
    return frames


def test_the_installed_aiormq_is_the_one_the_adapter_was_written_against():
    assert version("aiormq") == wire.AIORMQ_VERSION, (
        "producers/wire.py reaches into aiormq's channel (delivery_tag, confirmations, "
        "message_id_delivery_tag, write_queue, lock); check them against the new aiormq, "
        "then update AIORMQ_VERSION"
    )


def test_the_channel_internals_the_adapter_uses_are_where_it_expects_them():
    fields = aiormq.Channel.__init__.__code__.co_names
    for name in ("confirmations", "message_id_delivery_tag", "delivery_tag", "write_queue"):
        assert name in fields, name
    # The private lock behind ``Channel.lock``, which a publish written at once checks is free.
    assert "_Channel__lock" in fields
    assert isinstance(aiormq.Channel.lock, property)
    assert {f for f in aiormq.abc.ChannelFrame.__dataclass_fields__} == {
        "payload",
        "should_close",
        "drain_future",
    }


@given(
    exchange=short_text,
    routing_key=short_text,
    message_id=short_text,
    correlation_id=st.none() | short_text,
    kind=st.none() | short_text,
    priority=st.none() | st.integers(0, 9),
    timestamp=st.none() | st.integers(0, 2**32 - 1),  # pamqp reads larger ones as ms
    headers=st.dictionaries(st.text(min_size=1, max_size=10), header_values, max_size=4),
    body=st.binary(max_size=300),
    mandatory=st.booleans(),
)
def test_frames_decode_to_what_was_encoded(
    exchange,
    routing_key,
    message_id,
    correlation_id,
    kind,
    priority,
    timestamp,
    headers,
    body,
    mandatory,
):
    properties = wire.encode_properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id,
        headers=wire.encode_table(headers) if headers else b"",
        priority=priority,
        correlation_id=correlation_id,
        timestamp=timestamp,
        type=kind,
    )
    message = wire.outgoing(
        exchange, routing_key, properties, body, message_id, mandatory=mandatory
    )
    # A small frame size, so long bodies are split over several body frames.
    frames = decode(wire.publish_frames(7, 64, message))
    assert {number for number, _ in frames} == {7}
    publish, content, *bodies = (f for _, f in frames)
    assert isinstance(publish, commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory) == (
        exchange,
        routing_key,
        mandatory,
    )
    assert isinstance(content, header.ContentHeader)
    assert content.body_size == len(body)
    props = content.properties
    assert props.message_id == message_id
    assert props.correlation_id == correlation_id
    assert props.message_type == kind
    assert props.priority == priority
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert (props.headers or {}) == headers
    expected_time = (
        None if timestamp is None else datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    )
    assert props.timestamp == expected_time
    assert b"".join(b.value for b in bodies) == body
    assert all(len(b.value) <= 64 for b in bodies)


def test_properties_match_pamqps_own_encoding_byte_for_byte():
    ours = wire.encode_properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="m-1",
        headers=wire.encode_table({"taskq-attempt": 3, "traceparent": "00-x"}),
        priority=2,
        correlation_id="c-1",
        timestamp=1_700_000_000,
        type="email.welcome",
    )
    theirs = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="m-1",
        headers={"taskq-attempt": 3, "traceparent": "00-x"},
        priority=2,
        correlation_id="c-1",
        timestamp=datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC),
        message_type="email.welcome",
    ).marshal()
    assert ours == theirs


@pytest.mark.parametrize("field", ["message_id", "correlation_id", "type"])
def test_a_short_string_over_255_bytes_is_refused_by_name_before_anything_is_written(field):
    # 200 characters, 400 bytes: a limit counted in characters would let it through.
    value = "é" * 200
    fields = {"message_id": "m", field: value}
    with pytest.raises(ValueError, match=rf"{field} is 400 bytes"):
        wire.encode_properties(content_type="application/json", delivery_mode=2, **fields)


def test_a_routing_key_over_255_bytes_is_refused():
    with pytest.raises(ValueError, match="routing key is 400 bytes"):
        wire.outgoing("x", "é" * 200, b"\x00\x00", b"", "m")


async def body_of(reader, queue: str) -> bytes:
    """Return the body of the next message in ``queue``, acked."""
    got = await next_message(reader, queue)
    await got.ack()
    return got.body


TAPS: dict[int, FrameTap] = {}


async def raw_channel(settings: BrokerSettings) -> tuple[aiormq.Connection, aiormq.Channel]:
    """Return a connection through a ``FrameTap`` and a confirm channel routed to ``Confirms``."""
    tap = FrameTap()
    connection = await aiormq.connect(settings.amqp_url.get_secret_value(), transport_factory=tap)
    ch = await connection.channel(publisher_confirms=True)
    tap.route(wire.Confirms(ch))
    TAPS[id(ch)] = tap
    return connection, ch


async def publish(ch: aiormq.Channel, messages: list[wire.Outgoing]) -> wire.Sent:
    return await wire.publish_confirmed(TAPS[id(ch)], ch, messages)


async def outcomes(ch: aiormq.Channel, messages: list[wire.Outgoing]) -> list[object]:
    """Publish ``messages`` and return what each confirm came to (a result or an error)."""
    sent = await publish(ch, messages)
    settled = await asyncio.wait_for(asyncio.gather(*sent.confirms, return_exceptions=True), 10)
    sent.forget()
    return settled


def message(queue: str, body: bytes, message_id: str, *, mandatory: bool = True) -> wire.Outgoing:
    properties = wire.encode_properties(
        content_type="application/json", delivery_mode=2, message_id=message_id
    )
    return wire.outgoing("", queue, properties, body, message_id, mandatory=mandatory)


@pytest.mark.rabbitmq
async def test_a_window_is_confirmed_in_order_and_lands_whole(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        await ch.queue_declare("wire.q", durable=True)
        big = b"x" * (ch.max_content_size * 2 + 5)  # three body frames
        messages = [message("wire.q", f"{i}".encode(), f"m{i}") for i in range(300)]
        messages.append(message("wire.q", big, "big"))
        sent = await publish(ch, messages)
        acks = await asyncio.wait_for(asyncio.gather(*sent.confirms), 10)
        sent.forget()
        assert acks == [None] * 301
        assert ch.delivery_tag == 301
        assert ch.confirmations == {}
        assert ch.message_id_delivery_tag == {}
        # A basic_publish after the window still gets its own confirm: the tags line up.
        after = ch.basic_publish(b"after", routing_key="wire.q")
        assert await asyncio.wait_for(after, 10) is None
    finally:
        await connection.close()
    async with channel(vhost) as reader:
        assert await depth(reader, "wire.q") == 302
        bodies = [await body_of(reader, "wire.q") for _ in range(302)]
    assert bodies[:300] == [f"{i}".encode() for i in range(300)]
    assert bodies[300:] == [big, b"after"]


@pytest.mark.rabbitmq
async def test_an_unroutable_message_fails_alone_as_returned(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        await ch.queue_declare("wire.r", durable=True)
        settled = await outcomes(
            ch,
            [
                message("wire.r", b"a", "a"),
                message("nowhere", b"b", "b"),
                message("wire.r", b"c", "c"),
            ],
        )
    finally:
        await connection.close()
    assert settled[0] is None
    assert isinstance(settled[1], wire.Returned)
    assert "312 NO_ROUTE" in str(settled[1])
    assert settled[2] is None


@pytest.mark.rabbitmq
async def test_a_missing_exchange_closes_the_channel_and_fails_every_confirm(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        missing = wire.outgoing("no.such.exchange", "k", b"\x90\x00\x00\x02", b"", "m")
        settled = await outcomes(ch, [missing, missing])
    finally:
        await connection.close()
    assert all(isinstance(o, aiormq.exceptions.ChannelNotFoundEntity) for o in settled), settled


@pytest.mark.rabbitmq
async def test_unconfirmed_messages_arrive_in_one_write(vhost: BrokerSettings):
    connection = await aiormq.connect(vhost.amqp_url.get_secret_value())
    try:
        ch = await connection.channel(publisher_confirms=False)
        await ch.queue_declare("wire.u")
        await wire.publish_unconfirmed(
            ch,
            [
                message("wire.u", b"1", "", mandatory=False),
                message("wire.u", b"2", "", mandatory=False),
            ],
        )
        async with channel(vhost) as reader:
            assert [await body_of(reader, "wire.u") for _ in range(2)] == [b"1", b"2"]
    finally:
        await connection.close()


@pytest.mark.rabbitmq
async def test_messages_a_full_queue_refuses_are_nacked(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
        await ch.queue_declare("wire.full", durable=True, arguments=arguments)
        settled = await outcomes(ch, [message("wire.full", b"x", f"n{i}") for i in range(3)])
    finally:
        await connection.close()
    assert settled[0] is None
    assert [type(o) for o in settled[1:]] == [wire.Nacked, wire.Nacked]


@pytest.mark.rabbitmq
async def test_a_window_goes_straight_to_the_socket_unless_frames_wait_in_aiormqs_queue(
    vhost: BrokerSettings,
):
    connection, ch = await raw_channel(vhost)
    tap = TAPS[id(ch)]
    try:
        await ch.queue_declare("wire.o", durable=True)
        payload = wire.publish_frames(ch.number, ch.max_content_size, message("wire.o", b"q", "q"))
        assert tap.write(ch, b"") is True  # nothing queued: written now
        ch.write_queue.put_nowait(aiormq.abc.ChannelFrame(payload=payload, should_close=False))
        assert tap.write(ch, payload) is False  # behind a queued frame: it must queue too
        ch.write_queue.get_nowait()
        # The queued publish was never written: the channel's tags still start at 1.
        sent = await publish(ch, [message("wire.o", b"1", "o1"), message("wire.o", b"2", "o2")])
        assert await asyncio.wait_for(asyncio.gather(*sent.confirms), 10) == [None, None]
        sent.forget()
    finally:
        await connection.close()
    async with channel(vhost) as reader:
        assert [await body_of(reader, "wire.o") for _ in range(2)] == [b"1", b"2"]


class FakeChannel:
    """The parts of an aiormq channel ``Confirms`` reads: its confirmations and returnable ids."""

    number = 1

    def __init__(self, tags: int) -> None:
        loop = asyncio.get_running_loop()
        self.confirmations = {t: loop.create_future() for t in range(1, tags + 1)}
        self.message_id_delivery_tag = {f"m{t}": t for t in range(1, tags + 1)}


class Aiormq(asyncio.Protocol):
    """aiormq's side of the tap: the bytes passed on to it."""

    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


def returned(tag: int, body: bytes) -> list[object]:
    """Return the frames of a returned message (its body in two frames), then the message's ack."""
    props = commands.Basic.Properties(message_id=f"m{tag}", delivery_mode=2)
    bodies = [ContentBody(body[:3]), ContentBody(body[3:])] if body else []
    return [
        commands.Basic.Return(312, "NO_ROUTE", "taskq.jobs", "nowhere"),
        header.ContentHeader(body_size=len(body), properties=props),
        *bodies,
        commands.Basic.Ack(tag),
    ]


async def test_acks_nacks_and_returns_settle_their_confirms_however_the_bytes_arrive():
    parts = [
        commands.Basic.Ack(2, multiple=True),  # 1 and 2
        commands.Basic.Nack(3),
        *returned(4, b"hello world"),  # returned, then acked: still a failure
        *returned(5, b""),
        commands.Basic.Ack(6),
        commands.Basic.Ack(6),  # a second answer for a settled tag is ignored
        commands.Basic.Qos(),  # not a confirm: aiormq's
    ]
    stream = b"".join(frame.marshal(p, 1) for p in parts)  # type: ignore[arg-type]
    for cut in range(1, len(stream)):
        ch = FakeChannel(7)
        futures = dict(ch.confirmations)
        inner = Aiormq()
        tap = _Tap(inner, {1: wire.Confirms(ch)})  # type: ignore[arg-type, dict-item]
        tap.data_received(stream[:cut])
        tap.data_received(stream[cut:])
        assert [type(p) for _, p in decode(inner.data)] == [commands.Basic.Qos]
        outcomes = {
            t: (f.exception() or f.result()) if f.done() else "pending" for t, f in futures.items()
        }
        assert [type(o).__name__ for o in outcomes.values()] == [
            "NoneType",
            "NoneType",
            "Nacked",
            "Returned",
            "Returned",
            "NoneType",
            "str",
        ]
        assert set(ch.confirmations) == {7}  # only the unanswered tag is left

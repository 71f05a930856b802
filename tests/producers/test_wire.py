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

from producers import wire
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


async def raw_channel(settings: BrokerSettings) -> tuple[aiormq.Connection, aiormq.Channel]:
    connection = await aiormq.connect(settings.amqp_url.get_secret_value())
    return connection, await connection.channel(publisher_confirms=True)


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
        sent = await wire.publish_confirmed(ch, messages)
        acks = await asyncio.wait_for(asyncio.gather(*sent.confirms), 10)
        sent.forget()
        assert all(isinstance(a, commands.Basic.Ack) for a in acks)
        assert ch.delivery_tag == 301
        assert ch.confirmations == {}
        assert ch.message_id_delivery_tag == {}
        # A basic_publish after the window still gets its own confirm: the tags line up.
        assert isinstance(
            await ch.basic_publish(b"after", routing_key="wire.q"), commands.Basic.Ack
        )
    finally:
        await connection.close()
    async with channel(vhost) as reader:
        assert await depth(reader, "wire.q") == 302
        bodies = [await body_of(reader, "wire.q") for _ in range(302)]
    assert bodies[:300] == [f"{i}".encode() for i in range(300)]
    assert bodies[300:] == [big, b"after"]


@pytest.mark.rabbitmq
async def test_an_unroutable_message_fails_alone_with_aiormqs_publish_error(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        await ch.queue_declare("wire.r", durable=True)
        sent = await wire.publish_confirmed(
            ch,
            [
                message("wire.r", b"a", "a"),
                message("nowhere", b"b", "b"),
                message("wire.r", b"c", "c"),
            ],
        )
        outcomes = await asyncio.wait_for(
            asyncio.gather(*sent.confirms, return_exceptions=True), 10
        )
        sent.forget()
    finally:
        await connection.close()
    assert isinstance(outcomes[0], commands.Basic.Ack)
    assert isinstance(outcomes[1], aiormq.exceptions.PublishError)
    assert isinstance(outcomes[2], commands.Basic.Ack)


@pytest.mark.rabbitmq
async def test_a_missing_exchange_closes_the_channel_and_fails_every_confirm(vhost: BrokerSettings):
    connection, ch = await raw_channel(vhost)
    try:
        missing = wire.outgoing("no.such.exchange", "k", b"\x90\x00\x00\x02", b"", "m")
        sent = await wire.publish_confirmed(ch, [missing, missing])
        outcomes = await asyncio.wait_for(
            asyncio.gather(*sent.confirms, return_exceptions=True), 10
        )
    finally:
        await connection.close()
    assert all(isinstance(o, aiormq.exceptions.ChannelNotFoundEntity) for o in outcomes), outcomes


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

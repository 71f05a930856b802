"""The Publisher contract, run against InMemoryPublisher, and ConfirmedPublisher and PikaPublisher on RabbitMQ."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from producers.pika_publisher import PikaPublisher
from producers.publisher import ConfirmedPublisher, Publisher
from tests.broker import channel, depth, next_message, wait_for_connection
from tests.fakes.publisher import InMemoryPublisher
from tests.faultproxy import FaultProxy
from topology import names
from topology.apply import apply_topology
from topology.envelope import Envelope, decode
from topology.errors import (
    BrokerUnavailableError,
    ConfirmTimeoutError,
    ContractError,
    PublishNackedError,
    UnroutableError,
)
from topology.routes import Route, delay_route
from topology.settings import PublisherSettings, load_settings
from topology.spec import Priority


@dataclass
class Harness:
    publisher: Publisher
    drain: Callable[[str], Awaitable[list[Envelope]]]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("pika", marks=pytest.mark.rabbitmq),
    ]
)
async def harness(request, topology) -> AsyncIterator[Harness]:
    if request.param == "memory":
        fake = InMemoryPublisher(topology)

        async def drain_fake(queue: str) -> list[Envelope]:
            return fake.queues.pop(queue, [])

        yield Harness(fake, drain_fake)
        return
    settings = request.getfixturevalue("vhost")
    await apply_topology(topology, settings)
    # PikaPublisher blocks this test's event loop while it waits for confirms; fine in tests.
    connect = PikaPublisher.connect if request.param == "pika" else ConfirmedPublisher.connect
    async with (
        await connect(settings, topology) as real,
        channel(settings) as ch,
    ):

        async def drain_real(queue: str) -> list[Envelope]:
            out = []
            for _ in range(await depth(ch, queue)):
                message = await next_message(ch, queue)
                out.append(decode(message.body))
                await message.ack()
            return out

        yield Harness(real, drain_real)


async def test_published_job_lands_unchanged_in_its_group_queue(harness: Harness):
    job = Envelope.new("email.welcome", {"to": "a@example.com"}, idempotency_key="k1")
    await harness.publisher.publish(job)
    assert await harness.drain("taskq.email") == [job]
    assert await harness.drain("taskq.github") == []


async def test_unknown_job_type_is_unroutable_and_lands_nowhere(harness: Harness):
    with pytest.raises(UnroutableError, match=r"routing key 'nobody\.takes\.this'"):
        await harness.publisher.publish(Envelope.new("nobody.takes.this"))
    assert await harness.drain("taskq.default") == []


async def test_publish_many_reports_one_result_per_job_in_order(harness: Harness):
    jobs = [Envelope.new("job.a", {"i": i}) for i in range(5)]
    jobs.insert(2, Envelope.new("nope"))
    results = await harness.publisher.publish_many(jobs)
    assert [type(r) for r in results] == [type(None)] * 2 + [UnroutableError] + [type(None)] * 3
    assert [e.payload for e in await harness.drain("taskq.default")] == [{"i": i} for i in range(5)]


async def test_delay_route_puts_the_job_in_its_tier_queue(harness: Harness, topology):
    job = Envelope.new("email", {"later": True})
    await harness.publisher.publish(job, delay_route(topology, job, 60_000))
    assert await harness.drain("taskq.delay.32s") == [job]


async def test_dead_letter_route_puts_the_job_in_the_group_dlq(harness: Harness, topology):
    job = Envelope.new("github.push")
    await harness.publisher.publish(job, Route(topology.dead_letter_exchange, "github"))
    assert await harness.drain("taskq.github.dlq") == [job]


@pytest.mark.rabbitmq
async def test_message_on_the_wire_is_persistent_with_identity_and_headers(applied, topology):
    job = Envelope.new("email", {"a": 1}, priority=Priority.HIGH, attempt=2, correlation_id="corr")
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        await publisher.publish(job)
    async with channel(applied) as ch:
        message = await next_message(ch, "taskq.email")
    assert message.delivery_mode == 2
    assert message.priority == 2
    assert message.message_id == job.id
    assert message.correlation_id == "corr"
    assert message.content_type == "application/json"
    assert message.type == "email"
    assert message.headers[names.ATTEMPT_HEADER] == 2
    # Only lane groups route on a priority header; a priority queue reads the property.
    assert names.PRIORITY_HEADER not in message.headers


@pytest.mark.rabbitmq
async def test_refusals_move_later_publishes_to_a_new_channel_at_most_once_a_second(
    applied, topology
):
    settings = PublisherSettings(confirm_timeout=0.5)
    full = f"full-{uuid.uuid4().hex[:8]}"
    async with (
        await ConfirmedPublisher.connect(applied, topology, settings) as publisher,
        channel(applied) as ch,
    ):
        await ch.declare_queue(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        channels = publisher.connection.transport.connection.channels  # aiormq's, by number

        def open_channels() -> set[int]:
            return {n for n, c in channels.items() if c is not None and not c.is_closed}

        first = open_channels()
        for _ in range(5):
            with pytest.raises(PublishNackedError):
                await publisher.publish(Envelope.new("email", {}), Route("", full))
        renewed = open_channels() - first
        assert len(renewed) == 1, f"channels opened for five refusals in a row: {renewed}"
        # The old channel closes once no publish can wait on it (twice the confirm timeout).
        await asyncio.sleep(2 * settings.confirm_timeout + 0.5)
        assert open_channels() == renewed
        await publisher.publish(Envelope.new("email", {"on": "the new channel"}))
        assert await depth(ch, "taskq.email") == 1


@pytest.mark.rabbitmq
async def test_pika_publishes_on_a_new_channel_after_a_refusal(applied, topology):
    full = f"full-{uuid.uuid4().hex[:8]}"
    async with (
        await PikaPublisher.connect(applied, topology) as publisher,
        channel(applied) as ch,
    ):
        await ch.declare_queue(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        refused = publisher._live_channel()
        with pytest.raises(PublishNackedError):
            await publisher.publish(Envelope.new("email", {}), Route("", full))
        assert not refused.is_open  # dropped where the refusal was read
        await publisher.publish(Envelope.new("email", {"on": "the new channel"}))
        assert publisher._live_channel() is not refused
        assert await depth(ch, "taskq.email") == 1


@pytest.mark.rabbitmq
async def test_thousands_of_concurrent_publishes_are_all_confirmed(applied, topology):
    jobs = [Envelope.new("job.bulk", {"i": i}) for i in range(3000)]
    settings = PublisherSettings(publish_window=256)
    async with await ConfirmedPublisher.connect(applied, topology, settings) as publisher:
        assert await publisher.publish_many(jobs) == [None] * 3000
    async with channel(applied) as ch:
        assert await depth(ch, "taskq.default") == 3000


@pytest.mark.rabbitmq
async def test_a_message_amqp_cannot_carry_fails_alone_before_anything_is_written(
    applied, topology
):
    good = [Envelope.new("email", {"n": i}) for i in range(3)]
    # Built past validation, as a bug could: 200 characters, 400 bytes.
    bad = good[0].model_copy(update={"id": "not-sent", "correlation_id": "é" * 200})
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        results = await publisher.publish_many([good[0], bad, good[1], good[2]])
        with pytest.raises(ContractError, match="correlation_id is 400 bytes"):
            await publisher.publish(bad)
    assert results[0] is None
    assert isinstance(results[1], ContractError)
    assert results[2:] == [None, None]
    async with channel(applied) as ch:
        assert await depth(ch, "taskq.email") == 3


@pytest.mark.rabbitmq
async def test_missing_exchange_is_unroutable_with_a_hint_to_apply(vhost, topology):
    # The vhost is empty: nothing was applied.
    async with await ConfirmedPublisher.connect(vhost, topology) as publisher:
        with pytest.raises(UnroutableError, match="taskctl topology apply"):
            await publisher.publish(Envelope.new("email"))
        # The broker closed the channel; the robust channel reopens and publishing resumes.
        await apply_topology(topology, vhost)
        await publisher.publish(Envelope.new("email"))
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.email") == 1


@pytest.mark.rabbitmq
async def test_unreachable_broker_raises_broker_unavailable(broker_settings, topology):
    nowhere = load_settings(
        {"TASKQ_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "TASKQ_CONNECT_TIMEOUT": "2"},
    ).broker
    with pytest.raises(
        BrokerUnavailableError, match="cannot connect to RabbitMQ at amqp://guest:\\*\\*\\*@"
    ):
        await ConfirmedPublisher.connect(nowhere, topology)


@pytest.mark.rabbitmq
async def test_publish_after_close_raises_broker_unavailable(applied, topology):
    publisher = await ConfirmedPublisher.connect(applied, topology)
    await publisher.close()
    assert not publisher.connected
    with pytest.raises(BrokerUnavailableError):
        await publisher.publish(Envelope.new("email"))


@pytest.mark.rabbitmq
async def test_publisher_recovers_after_the_broker_drops_its_connection(
    applied, topology, management
):
    name = f"publisher-{uuid.uuid4().hex[:6]}"
    settings = PublisherSettings(confirm_timeout=10)
    async with await ConfirmedPublisher.connect(
        applied, topology, settings, name=name
    ) as publisher:
        await publisher.publish(Envelope.new("email", {"n": 1}))
        first = await wait_for_connection(management, applied.vhost, name)
        await management.close_connection(first, reason="test: cut the link")
        # The robust connection reconnects and restores the channel; publishing resumes.
        async with asyncio.timeout(20):
            while True:
                try:
                    await publisher.publish(Envelope.new("email", {"n": 2}))
                    break
                except BrokerUnavailableError:
                    await asyncio.sleep(0.2)
        second = await wait_for_connection(management, applied.vhost, name)
        assert second != first
    async with channel(applied) as ch:
        payloads = []
        for _ in range(await depth(ch, "taskq.email")):
            message = await next_message(ch, "taskq.email")
            payloads.append(decode(message.body).payload)
            await message.ack()
    assert {"n": 1} in payloads
    assert {"n": 2} in payloads


def _wire(message) -> dict:
    """Return what a consumer sees of a message's properties, apart from its identity."""
    return {
        "delivery_mode": int(message.delivery_mode),
        "priority": message.priority,
        "content_type": message.content_type,
        "type": message.type,
        "headers": message.headers,
        "timestamp": message.timestamp,
        "correlation_id": message.correlation_id,
    }


@pytest.mark.rabbitmq
async def test_pika_sends_the_same_properties_as_the_confirmed_publisher(applied, topology):
    # Microseconds, so a rounding (rather than truncating) timestamp would show.
    created = datetime(2026, 3, 1, 12, 0, 0, 987654, tzinfo=UTC)
    jobs = [
        Envelope.new(
            "email",
            {"n": n},
            priority=Priority.HIGH,
            attempt=3,
            correlation_id="corr",
            created_at=created,
        )
        for n in range(2)
    ]
    async with await ConfirmedPublisher.connect(applied, topology) as aio:
        await aio.publish(jobs[0], delay_route(topology, jobs[0], 60_000))
    async with await PikaPublisher.connect(applied, topology) as blocking:
        await blocking.publish(jobs[1], delay_route(topology, jobs[1], 60_000))
    async with channel(applied) as ch:
        first = await next_message(ch, "taskq.delay.32s")
        await first.ack()
        second = await next_message(ch, "taskq.delay.32s")
    assert [first.message_id, second.message_id] == [jobs[0].id, jobs[1].id]
    assert _wire(second) == _wire(first)
    assert first.headers == {names.ATTEMPT_HEADER: 3, names.DELAY_HEADER: "32s"}
    assert first.timestamp == created.replace(microsecond=0)


@pytest.mark.rabbitmq
async def test_pika_missing_exchange_is_unroutable_then_publishes_after_apply(vhost, topology):
    async with await PikaPublisher.connect(vhost, topology) as publisher:
        with pytest.raises(UnroutableError, match="taskctl topology apply"):
            await publisher.publish(Envelope.new("email"))
        # The broker closed the channel; the next publish opens a new one.
        await apply_topology(topology, vhost)
        await publisher.publish(Envelope.new("email"))
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.email") == 1


@pytest.mark.rabbitmq
async def test_pika_unreachable_broker_raises_broker_unavailable_quickly(broker_settings, topology):
    nowhere = load_settings(
        {"TASKQ_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "TASKQ_CONNECT_TIMEOUT": "2"},
    ).broker
    started = time.monotonic()
    with pytest.raises(
        BrokerUnavailableError, match="cannot connect to RabbitMQ at amqp://guest:\\*\\*\\*@"
    ):
        await PikaPublisher.connect(nowhere, topology)
    assert time.monotonic() - started < 2


@pytest.mark.rabbitmq
async def test_pika_reconnects_before_publishing_when_the_broker_dropped_it_meanwhile(
    applied, topology, management
):
    name = f"pika-{uuid.uuid4().hex[:6]}"
    async with await PikaPublisher.connect(applied, topology, name=name) as publisher:
        await publisher.publish(Envelope.new("email", {"n": 1}))
        first = await wait_for_connection(management, applied.vhost, name)
        await management.close_connection(first, reason="test: cut the link")
        # The broker sent connection.close at once; the idle client has not read it yet (and
        # the broker lists the connection until it does), so give the frame time to arrive.
        await asyncio.sleep(0.5)
        # The publish reads the close first and reconnects once, instead of failing.
        await publisher.publish(Envelope.new("email", {"n": 2}))
        assert await wait_for_connection(management, applied.vhost, name, besides=first)
    async with channel(applied) as ch:
        assert await depth(ch, "taskq.email") == 2


@pytest.mark.rabbitmq
async def test_pika_publish_after_close_raises_broker_unavailable(applied, topology):
    publisher = await PikaPublisher.connect(applied, topology)
    await publisher.close()
    with pytest.raises(BrokerUnavailableError, match="closed"):
        await publisher.publish(Envelope.new("email"))


@pytest.mark.rabbitmq
async def test_a_confirm_that_does_not_come_in_time_fails_that_publish_only(applied, topology):
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.start()
    try:
        url = applied.amqp_url.get_secret_value().replace(":5672/", f":{proxy.port}/")
        through = applied.model_copy(update={"amqp_url": SecretStr(url)})
        settings = PublisherSettings(confirm_timeout=0.5)
        async with await ConfirmedPublisher.connect(through, topology, settings) as publisher:
            await publisher.publish(Envelope.new("email", {"before": True}))
            proxy.stall()  # the broker's confirms cannot come back for now
            began = time.monotonic()
            late = await publisher.publish_many([Envelope.new("email", {"i": i}) for i in range(3)])
            waited = time.monotonic() - began
            proxy.resume()
            assert [type(r) for r in late] == [ConfirmTimeoutError] * 3
            assert 0.5 <= waited < 2.0
            await publisher.publish(Envelope.new("email", {"after": True}))  # and it goes on
    finally:
        await asyncio.to_thread(proxy.stop)


@pytest.mark.rabbitmq
async def test_a_connection_given_up_on_fails_publishes_and_events_as_the_broker_unavailable(
    applied, topology
):
    # aiormq gives a silent link up after (heartbeat + 1) x 3 s and fails what waits on it with
    # CancelledError: a caller must see the broker unavailable, not its own task cancelled.
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.start()
    try:
        url = applied.amqp_url.get_secret_value().replace(":5672/", f":{proxy.port}/")
        through = applied.model_copy(update={"amqp_url": SecretStr(url), "heartbeat": 1})
        settings = PublisherSettings(confirm_timeout=30)
        async with await ConfirmedPublisher.connect(through, topology, settings) as publisher:
            await publisher.publish(Envelope.new("email", {"before": True}))
            proxy.stall()
            began = time.monotonic()
            outcomes = await asyncio.gather(
                publisher.publish(Envelope.new("email", {"during": True})),
                # The first events open their channel: that call waits on the link too.
                publisher.publish_events([("job.email.queued", b"{}")]),
                return_exceptions=True,
            )
            assert [type(o) for o in outcomes] == [BrokerUnavailableError] * 2, outcomes
            assert time.monotonic() - began < 15
    finally:
        await asyncio.to_thread(proxy.stop)

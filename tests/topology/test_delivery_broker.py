"""What the compiled topology does on the real broker: routing, priority, DLQ, delay tiers."""

import asyncio
import time

import aio_pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.publisher import ConfirmedPublisher
from tests.broker import channel, depth, next_message
from topology import names
from topology.envelope import Envelope, decode
from topology.routes import delay_route
from topology.spec import Priority

pytestmark = pytest.mark.rabbitmq

EXAMPLE_KEYS = {
    "email": ["email", "email.welcome"],
    "github": ["github.push", "github"],
    "standard": ["webhook.a.b"],
    "default": ["job.thumbnail"],
    "callbacks": ["taskq.callback"],
}


async def test_each_group_job_types_land_in_that_group_queue_and_nowhere_else(applied, topology):
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        for group in topology.groups:
            for key in EXAMPLE_KEYS[group.name]:
                await publisher.publish(Envelope.new(key, {"group": group.name}))
    async with channel(applied) as ch:
        for group in topology.groups:
            assert await depth(ch, group.work_queues[Priority.MEDIUM]) == len(
                EXAMPLE_KEYS[group.name]
            )
            for _ in EXAMPLE_KEYS[group.name]:
                message = await next_message(ch, group.work_queues[Priority.MEDIUM])
                assert decode(message.body).payload == {"group": group.name}
                await message.ack()
        for queue in topology.queues:
            assert await depth(ch, queue.name) == 0, queue.name


async def test_urgent_job_overtakes_a_backlog_of_low_ones_with_a_small_prefetch(applied, topology):
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        backlog = [Envelope.new("email", {"n": i}, priority=Priority.LOW) for i in range(50)]
        assert set(await publisher.publish_many(backlog)) == {None}
        await publisher.publish(Envelope.new("email", {"n": "urgent"}, priority=Priority.URGENT))
    async with channel(applied) as ch:
        first = await next_message(ch, "taskq.email")
        assert decode(first.body).payload == {"n": "urgent"}
        assert first.priority == 3


async def test_rejected_message_reaches_the_group_dlq(applied, topology):
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        await publisher.publish(Envelope.new("github.push", {"x": 1}))
    async with channel(applied) as ch:
        message = await next_message(ch, "taskq.github")
        await message.reject(requeue=False)
        dead = await next_message(ch, "taskq.github.dlq")
        assert decode(dead.body).type == "github.push"
        (death,) = dead.headers["x-death"]
        assert death["reason"] == "rejected"
        assert death["queue"] == "taskq.github"
        assert dead.routing_key == "github"


async def test_delay_tier_returns_the_job_after_its_delay_and_short_delays_do_not_wait_for_long(
    applied, topology
):
    long_job = Envelope.new("email", {"delay": "long"})
    short_job = Envelope.new("email", {"delay": "short"})
    async with channel(applied) as ch:
        q = await ch.get_queue("taskq.email", ensure=False)
        arrivals: asyncio.Queue[tuple[float, dict]] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await arrivals.put((time.monotonic(), decode(message.body).payload))
            await message.ack()

        await q.consume(on_message)
        async with await ConfirmedPublisher.connect(applied, topology) as publisher:
            start = time.monotonic()
            # The long one goes first: with one shared delay queue it would block the short one.
            await publisher.publish(long_job, delay_route(topology, long_job, 4000))
            await publisher.publish(short_job, delay_route(topology, short_job, 1000))
        async with asyncio.timeout(15):
            first_at, first = await arrivals.get()
            second_at, second = await arrivals.get()
    assert first == {"delay": "short"}
    assert 0.9 <= first_at - start < 3.0
    assert second == {"delay": "long"}
    assert second_at - start >= 3.9


async def test_delayed_message_keeps_its_priority_and_routing_key(applied, topology):
    job = Envelope.new("email.welcome", {"p": 1}, priority=Priority.HIGH)
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        await publisher.publish(job, delay_route(topology, job, 1000))
    async with channel(applied) as ch:
        message = await next_message(ch, "taskq.email")
        assert message.routing_key == "email.welcome"
        assert message.priority == 2
        assert message.headers[names.DELAY_HEADER] == "1s"
        assert decode(message.body) == job


LANES = """
groups:
  pay:
    jobs: ["pay.#"]
    priority: {strategy: lanes, queue_type: quorum}
"""


async def test_lanes_group_routes_each_priority_to_its_own_quorum_queue(vhost):
    from tests.topology.test_apply_broker import variant
    from topology.apply import apply_topology

    topology = variant(LANES)
    await apply_topology(topology, vhost)
    async with await ConfirmedPublisher.connect(vhost, topology) as publisher:
        for priority in Priority:
            await publisher.publish(
                Envelope.new("pay.charge", {"p": priority.value}, priority=priority)
            )
    async with channel(vhost) as ch:
        for priority in Priority:
            queue = f"taskq.pay.{priority.value}"
            message = await next_message(ch, queue)
            assert decode(message.body).payload == {"p": priority.value}
            await message.ack()


words = st.sampled_from(["a", "b"])
patterns = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=4).map(".".join)
keys = st.lists(st.lists(words, min_size=1, max_size=4).map(".".join), min_size=1, max_size=6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=patterns, routing_keys=keys)
def test_topic_matcher_agrees_with_rabbitmq(vhost, pattern: str, routing_keys: list[str]):
    from topology.routing import matches

    async def delivered() -> list[bool]:
        connection = await aio_pika.connect(vhost.amqp_url.get_secret_value())
        async with connection:
            ch = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await ch.declare_exchange("diff", "topic", auto_delete=True)
            queue = await ch.declare_queue(exclusive=True)
            await queue.bind(exchange, pattern)
            out = []
            for key in routing_keys:
                try:
                    await exchange.publish(aio_pika.Message(b"x"), key, mandatory=True)
                    out.append(True)
                except aio_pika.exceptions.PublishError:
                    out.append(False)
            return out

    assert asyncio.run(delivered()) == [matches(pattern, key) for key in routing_keys]

import datetime

import aio_pika
import pytest

from consumers.autoscaler.signals import QueueSignals, SignalReader, SignalsUnavailable
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import parse_topology
from topology.settings import BrokerSettings

pytestmark = pytest.mark.rabbitmq

# One long delay tier, so a message parked there stays put for the whole test.
TOPOLOGY = compile_topology(
    parse_topology(
        """
        delays: {resolution: 1m, longest: 1m}
        groups:
          mail: {jobs: ["mail.#"]}
          pay: {jobs: ["pay.#"], priority: {strategy: lanes, queue_type: quorum}}
        """
    )
)
# RabbitMQ refreshes queue statistics every 5 s (collect_statistics_interval).
STATS_LAG = 20


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for _ in range(count):
        await channel.default_exchange.publish(aio_pika.Message(b"{}", timestamp=now), queue)


async def settle(reader: SignalReader, group, expected, *, aged: bool = False) -> QueueSignals:
    """Return the first reading whose (ready, unacked, consumers) is ``expected`` (and has an age if ``aged``)."""
    seen: list[QueueSignals] = []

    async def reached() -> bool:
        try:
            seen.append(await reader.read(group))
        except SignalsUnavailable:
            return False  # a queue declared moments ago has no statistics yet
        counts = (seen[-1].ready, seen[-1].unacked, seen[-1].consumers)
        # The head's timestamp can arrive a statistics round after the counts.
        return counts == expected and (not aged or seen[-1].oldest_age is not None)

    await eventually(reached, within=STATS_LAG, every=0.5)
    return seen[-1]


async def test_ready_messages_count_and_retry_tiers_and_the_dlq_do_not(vhost: BrokerSettings):
    await apply_topology(TOPOLOGY, vhost)
    mail = TOPOLOGY.group("mail")
    connection = await aio_pika.connect(vhost.amqp_url.get_secret_value())
    async with connection, SignalReader(vhost) as reader:
        channel = await connection.channel()
        await publish(channel, mail.queue_names[0], 25)
        await publish(channel, mail.dead_letter_queue, 5)
        await publish(channel, TOPOLOGY.tiers[0].queue, 4)
        signals = await settle(reader, mail, (25, 0, 0), aged=True)
    assert signals.publish_rate >= 0
    assert signals.ack_rate == 0
    # A classic queue exposes its head message's timestamp.
    assert signals.oldest_age is not None
    assert 0 <= signals.oldest_age < 60


async def test_lanes_sum_ready_and_unacked_and_count_consumers_of_the_urgent_lane(
    vhost: BrokerSettings,
):
    await apply_topology(TOPOLOGY, vhost)
    pay = TOPOLOGY.group("pay")
    urgent, *_, low = pay.queue_names
    connection = await aio_pika.connect(vhost.amqp_url.get_secret_value())
    async with connection, SignalReader(vhost) as reader:
        channel = await connection.channel()
        await publish(channel, urgent, 3)
        await publish(channel, low, 4)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=2)
        queue = await consumer.get_queue(urgent, ensure=False)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)  # never acked: stays unacknowledged

        await queue.consume(hold)
        signals = await settle(reader, pay, (5, 2, 1))
    assert len(held) == 2
    # Quorum queues on 3.10 do not report head_message_timestamp.
    assert signals.oldest_age is None

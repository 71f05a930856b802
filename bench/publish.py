"""Confirmed publish throughput: taskq's ConfirmedPublisher against plain aio-pika, same run.

Usage: .venv/bin/python bench/publish.py [--messages 10000] [--rounds 7] [--window 512]

Every variant publishes persistent, mandatory messages with publisher confirms to
``taskq.jobs`` (routing key ``email``) in a scratch vhost holding the default topology; the
queue is purged after each run. Rounds interleave the variants (reversing the order every
other round) so drift on a shared machine hits them alike. The table gives the median msg/s
and the ratio to the baseline.

- ``aio-pika one-at-a-time``: await each confirm before the next publish (context only).
- ``aio-pika windowed, same message`` (THE baseline): the bytes and AMQP properties taskq
  sends (message id, type, priority, timestamp, attempt header), with the body pre-encoded and
  the ``aio_pika.Message`` built as it is published, over ``asyncio.gather`` windows of
  ``--window`` so confirms are awaited together.
- ``aio-pika windowed, pre-built messages``: the same messages all built before the clock
  starts (an upper bound: no publisher gets its messages for free).
- ``aio-pika windowed, bare message``: pre-built, with only a body and delivery mode.
- ``taskq publish_many``: ``ConfirmedPublisher.publish_many`` over pre-built envelopes (encoding,
  properties and routing happen inside, per message, in the timed part).
- ``taskq Envelope.new + publish_many``: the same with envelope creation (validation, id) timed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractExchange

from producers.publisher import ConfirmedPublisher
from producers.settings import PublisherSettings
from topology.apply import apply_topology
from topology.compiler import compile_topology
from topology.envelope import Envelope
from topology.loader import load_topology
from topology.management import ManagementClient
from topology.settings import BrokerSettings, load_settings

Run = Callable[[], Awaitable[int]]
BASELINE = "aio-pika windowed, same message"


def payload(i: int) -> dict[str, object]:
    return {"to": f"user{i}@example.com", "template": "welcome", "n": i}


def same_message(envelope: Envelope, body: bytes | None = None) -> aio_pika.Message:
    props = envelope.properties()
    return aio_pika.Message(
        envelope.encode() if body is None else body,
        headers=dict(props.headers),
        content_type=props.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=props.priority,
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
    )


def windowed(exchange: AbstractExchange, messages: list[aio_pika.Message], window: int) -> Run:
    async def run() -> int:
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            await asyncio.gather(*(exchange.publish(m, "email", mandatory=True) for m in chunk))
        return len(messages)

    return run


def built_per_publish(exchange: AbstractExchange, n: int, window: int) -> Run:
    envelopes = [Envelope.new("email", payload(i)) for i in range(n)]
    bodies = [e.encode() for e in envelopes]

    async def run() -> int:
        for start in range(0, n, window):
            await asyncio.gather(
                *(
                    exchange.publish(same_message(envelopes[i], bodies[i]), "email", mandatory=True)
                    for i in range(start, min(n, start + window))
                )
            )
        return n

    return run


def one_at_a_time(exchange: AbstractExchange, messages: list[aio_pika.Message]) -> Run:
    async def run() -> int:
        for message in messages:
            await exchange.publish(message, "email", mandatory=True)
        return len(messages)

    return run


def taskq(publisher: ConfirmedPublisher, n: int, *, prebuilt: bool) -> Run:
    envelopes = [Envelope.new("email", payload(i)) for i in range(n)]

    async def run() -> int:
        jobs = envelopes if prebuilt else [Envelope.new("email", payload(i)) for i in range(n)]
        results = await publisher.publish_many(jobs)
        assert not any(results), results
        return n

    return run


async def measure(
    variants: dict[str, Run], rounds: int, purge: Callable[[], Awaitable[object]]
) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_no in range(rounds):
        order = list(variants.items())
        for name, run in order if round_no % 2 == 0 else reversed(order):
            started = time.perf_counter()
            count = await run()
            rates[name].append(count / (time.perf_counter() - started))
            await purge()
    return rates


async def bench(settings: BrokerSettings, n: int, rounds: int, window: int) -> None:
    topology = compile_topology(load_topology())
    await apply_topology(topology, settings)
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange(topology.jobs_exchange, ensure=False)
    queue = await channel.get_queue("taskq.email", ensure=False)
    publisher = await ConfirmedPublisher.connect(
        settings, topology, PublisherSettings(publish_window=window)
    )

    def bare() -> list[aio_pika.Message]:
        return [
            aio_pika.Message(
                Envelope.new("email", payload(i)).encode(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            for i in range(n)
        ]

    variants: dict[str, Run] = {
        "aio-pika one-at-a-time": one_at_a_time(exchange, bare()[: max(n // 5, 500)]),
        BASELINE: built_per_publish(exchange, n, window),
        "aio-pika windowed, pre-built messages": windowed(
            exchange, [same_message(Envelope.new("email", payload(i))) for i in range(n)], window
        ),
        "aio-pika windowed, bare message": windowed(exchange, bare(), window),
        "taskq publish_many": taskq(publisher, n, prebuilt=True),
        "taskq Envelope.new + publish_many": taskq(publisher, n, prebuilt=False),
    }
    await variants[BASELINE]()  # warm up connections, channels and the queue
    await queue.purge()
    rates = await measure(variants, rounds, queue.purge)
    await publisher.close()
    await connection.close()

    baseline = statistics.median(rates[BASELINE])
    print(f"{n} messages x {rounds} rounds, window {window}, {settings.describe()}")
    print(f"{'variant':36} {'median msg/s':>13} {'min':>8} {'max':>8} {'ratio':>6}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"{name:36} {median:13.0f} {min(values):8.0f} {max(values):8.0f} {median / baseline:6.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--window", type=int, default=512)
    opts = parser.parse_args()
    base = load_settings(BrokerSettings)
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    async with ManagementClient(base) as management:
        await management.create_vhost(vhost)
        try:
            await bench(base.with_vhost(vhost), opts.messages, opts.rounds, opts.window)
        finally:
            await management.delete_vhost(vhost)


if __name__ == "__main__":
    asyncio.run(main())

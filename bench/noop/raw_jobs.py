"""The no-op job on bare AMQP clients: the floor under any Python worker.

``python -m noop.raw_jobs enqueue`` publishes ``BENCH_JOBS`` 239-byte persistent JSON messages
to ``BENCH_QUEUE`` with confirms; ``python -m noop.raw_jobs consume --client aio-pika --loop
uvloop`` consumes them until SIGTERM. The aio-pika consumer acks each message; the aiormq one
acks every ``ACK_EVERY`` deliveries with ``multiple=True`` (the reference for batched acks).
Both decode the JSON body, as every other system does. ``BENCH_QUEUE_TYPE=quorum`` declares the
queue as a quorum queue (replicated on every node of a cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
import aiormq
import uvloop
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from noop.record import Completions, encode, payload

PREFETCH = 64  # the same as the email group of taskq's default topology
ACK_EVERY = 32  # half the window, so the broker never waits for an ack to send more
WINDOW = 500  # confirms in flight while enqueueing

completions = Completions.from_env()


def settings() -> tuple[str, str]:
    return os.environ["BENCH_AMQP_URL"], os.environ["BENCH_QUEUE"]


def arguments() -> dict[str, Any]:
    kind = os.environ.get("BENCH_QUEUE_TYPE")
    return {"x-queue-type": kind} if kind else {}


async def until_sigterm() -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


async def consume_aio_pika() -> None:
    url, name = settings()
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.declare_queue(name, durable=True, arguments=arguments())

    async def on_message(message: AbstractIncomingMessage) -> None:
        completions.tick(json.loads(message.body))
        await message.ack()

    await queue.consume(on_message)
    await until_sigterm()
    await connection.close()


async def consume_aiormq() -> None:
    url, name = settings()
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=PREFETCH)
    await channel.queue_declare(name, durable=True, arguments=arguments())
    seen = 0

    async def on_message(message: DeliveredMessage) -> None:
        nonlocal seen
        completions.tick(json.loads(message.body))
        seen += 1
        if seen % ACK_EVERY == 0 or seen == completions.jobs:
            assert message.delivery_tag is not None  # a delivery always has one
            await channel.basic_ack(message.delivery_tag, multiple=True)

    await channel.basic_consume(name, on_message, no_ack=False)
    await until_sigterm()
    await connection.close()


async def enqueue() -> None:
    url, name = settings()
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(name, durable=True, arguments=arguments())
    jobs = int(os.environ["BENCH_JOBS"])
    for start in range(0, jobs, WINDOW):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        encode(payload(seq)),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=name,
                )
                for seq in range(start, min(jobs, start + WINDOW))
            )
        )
    await connection.close()


CONSUMERS: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
    "aio-pika": consume_aio_pika,
    "aiormq": consume_aiormq,
}
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare AMQP consumer or producer.")
    parser.add_argument("action", choices=("consume", "enqueue"))
    parser.add_argument("--client", choices=sorted(CONSUMERS), default="aio-pika")
    parser.add_argument("--loop", choices=sorted(LOOPS), default="asyncio")
    opts = parser.parse_args()
    work = CONSUMERS[opts.client] if opts.action == "consume" else enqueue
    with asyncio.Runner(loop_factory=LOOPS[opts.loop]) as runner:
        runner.run(work())


if __name__ == "__main__":
    main()

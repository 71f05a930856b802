"""The no-op job as a FastStream subscriber on a RabbitBroker with its defaults.

Worker: ``faststream run noop.faststream_jobs:app``; producer: ``python -m noop.faststream_jobs``
publishes ``BENCH_JOBS`` persistent jobs with the broker's own ``publish`` (confirms on).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from faststream import FastStream
from faststream.rabbit import RabbitBroker, RabbitQueue

from noop.record import Completions, payload

# Durable like every other system's queue, so the persistent messages really are persisted.
QUEUE = RabbitQueue(os.environ.get("BENCH_QUEUE", "bench.faststream"), durable=True)
WINDOW = 500

completions = Completions.from_env()
broker = RabbitBroker(os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
app = FastStream(broker)


@broker.subscriber(QUEUE)
async def noop(job: dict[str, Any]) -> None:
    completions.tick(job)


async def enqueue() -> None:
    jobs = int(os.environ["BENCH_JOBS"])
    async with broker:
        await broker.declare_queue(QUEUE)
        for start in range(0, jobs, WINDOW):
            await asyncio.gather(
                *(
                    broker.publish(payload(seq), queue=QUEUE, persist=True)
                    for seq in range(start, min(jobs, start + WINDOW))
                )
            )


if __name__ == "__main__":
    asyncio.run(enqueue())

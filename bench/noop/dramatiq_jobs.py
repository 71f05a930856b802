"""The no-op job as a Dramatiq actor on a RabbitmqBroker with its default middleware.

Worker: ``dramatiq noop.dramatiq_jobs --processes 1 --threads 8``; producer: ``python -m
noop.dramatiq_jobs`` sends ``BENCH_JOBS`` messages with ``send``.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from noop.record import Completions, payload

completions = Completions.from_env()
dramatiq.set_broker(
    RabbitmqBroker(url=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
)


@dramatiq.actor
def noop(job: dict[str, Any]) -> None:
    completions.tick(job)


def enqueue() -> None:
    for seq in range(int(os.environ["BENCH_JOBS"])):
        noop.send(payload(seq))


if __name__ == "__main__":
    enqueue()

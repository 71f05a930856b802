"""The no-op job as a Celery task; the worker runs with Celery's defaults on RabbitMQ (py-amqp).

Worker: ``celery -A noop.celery_jobs worker --pool solo``; producer: ``python -m
noop.celery_jobs`` sends ``BENCH_JOBS`` tasks with ``delay``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from noop.record import Completions, payload

completions = Completions.from_env()
app = Celery("noop", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))


@app.task(name="noop")
def noop(job: dict[str, Any]) -> None:
    completions.tick(job)


def enqueue() -> None:
    for seq in range(int(os.environ["BENCH_JOBS"])):
        noop.delay(payload(seq))


if __name__ == "__main__":
    enqueue()

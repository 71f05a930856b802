"""Worker throughput: taskq's worker against a plain aio-pika consumer, same broker, same run.

Usage: .venv/bin/python bench/worker_throughput.py [--jobs 3000]

Both consume the same number of pre-published no-op jobs from a scratch vhost with manual acks
and the same prefetch (the default topology's email group: prefetch 32, concurrency 16). The plain consumer decodes nothing and acks each message; the taskq
worker runs with every feature on: envelope decoding, the job store (SQLite, group commit for
submissions), execution claims, status transitions, status events, confirmed publishes for
retries. The table gives jobs/s and the ratio to the plain consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika

from consumers.handlers import HandlerRegistry, JobContext
from consumers.settings import WorkerSettings
from consumers.worker import Deps, Worker
from producers.backends import open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from topology import BrokerSettings, load_settings
from topology.apply import apply_topology
from topology.broker import connect
from topology.management import ManagementClient


async def plain(settings: BrokerSettings, n: int, prefetch: int) -> float:
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue("taskq.email", passive=True)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen == n:
            done.set()

    started = time.perf_counter()
    await queue.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - started
    await connection.close()
    return n / elapsed


async def taskq_worker(env: dict[str, str], n: int) -> float:
    backends = await open_backends(env)
    publisher = await ConfirmedPublisher.connect(
        backends.broker, backends.topology, backends.publisher
    )
    registry = HandlerRegistry()
    finished = asyncio.Event()
    count = 0

    @registry.handler("email.#")
    async def noop(payload: object, ctx: JobContext) -> None:
        nonlocal count
        count += 1
        if count == n:
            finished.set()

    group = backends.topology.group("email")
    deps = Deps(
        backends.topology,
        group,
        registry,
        backends.store,
        backends.blobs,
        publisher,
        WorkerSettings(),
    )
    worker = Worker(deps)
    connection = await connect(backends.broker, name="bench worker")
    started = time.perf_counter()
    await worker.start(connection)
    await finished.wait()
    elapsed = time.perf_counter() - started
    await worker.stop(grace=10)
    await connection.close()
    await publisher.close()
    await backends.close()
    return n / elapsed


async def fill(env: dict[str, str], n: int) -> None:
    backends = await open_backends(env)
    publisher = await ConfirmedPublisher.connect(
        backends.broker, backends.topology, backends.publisher
    )
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.submit
    )
    for start in range(0, n, 500):
        await submitter.submit_many(
            [JobRequest(type="email", payload={"n": i}) for i in range(start, min(n, start + 500))]
        )
    await publisher.close()
    await backends.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    opts = parser.parse_args()
    base = load_settings(BrokerSettings)
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    async with ManagementClient(base) as management:
        await management.create_vhost(vhost)
        try:
            settings = base.with_vhost(vhost)
            env = {
                "TASKQ_AMQP_URL": settings.amqp_url.get_secret_value(),
                "TASKQ_STORE_URL": f"sqlite:///{work}/jobs.sqlite3",
                "TASKQ_BLOB_URL": f"file:{work}/blobs",
            }
            backends = await open_backends(env)
            await apply_topology(backends.topology, settings)
            await backends.close()
            await fill(env, opts.jobs)
            prefetch = backends.topology.group("email").spec.prefetch
            plain_rate = await plain(settings, opts.jobs, prefetch)
            await fill(env, opts.jobs)
            taskq_rate = await taskq_worker(env, opts.jobs)
        finally:
            await management.delete_vhost(vhost)
    print(f"{opts.jobs} no-op jobs, prefetch {prefetch}, one process each")
    print(f"{'consumer':44} {'jobs/s':>8} {'ratio':>6}")
    print(f"{'plain aio-pika, ack each message':44} {plain_rate:8.0f} {1.0:6.2f}")
    print(
        f"{'taskq worker, every feature on (SQLite)':44} {taskq_rate:8.0f} {taskq_rate / plain_rate:6.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())

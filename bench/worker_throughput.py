"""Worker throughput: taskq's worker against a plain aio-pika consumer, same broker, same run.

Usage: .venv/bin/python bench/worker_throughput.py [--jobs 3000] [--rounds 3]

Both consume the same number of pre-published no-op jobs from a scratch vhost with manual acks
and the same prefetch (the default topology's email group: prefetch 32, concurrency 16). The plain consumer decodes nothing and acks each message; the taskq
worker runs with every feature on: envelope decoding, the job store (SQLite, group commit for
submissions), execution claims, status transitions, status events, confirmed publishes for
retries. Each runs on asyncio's loop and on uvloop (what `taskctl worker` runs on); the
table gives jobs/s and the ratio to the plain consumer on asyncio's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aio_pika
import uvloop

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from producers.backends import confirmed, open_backends
from producers.submit import JobRequest, Submitter
from topology.apply import apply_topology
from topology.broker import connect
from topology.management import ManagementClient
from topology.settings import BrokerSettings, WorkerSettings, load_settings


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
    backends = await open_backends(load_settings(env))
    publisher = await confirmed("bench")(backends)
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
    connection = await connect(backends.settings.broker, name="bench worker")
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
    backends = await open_backends(load_settings(env))
    publisher = await confirmed("bench")(backends)
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.settings.submit
    )
    for start in range(0, n, 500):
        await submitter.submit_many(
            [JobRequest(type="email", payload={"n": i}) for i in range(start, min(n, start + 500))]
        )
    await publisher.close()
    await backends.close()


def measure(loop_name: str, coro: Coroutine[Any, Any, float]) -> tuple[float, float]:
    """Run one measurement on a fresh event loop of the named kind; jobs/s and CPU seconds."""
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        cpu = time.process_time()  # every thread of the process: the loop and SQLite's
        rate = runner.run(coro)
        return rate, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    settings = base.with_vhost(vhost)
    env = {
        "TASKQ_AMQP_URL": settings.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{work}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{work}/blobs",
    }
    asyncio.run(setup(base, vhost, env))
    prefetch = 32
    rates: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        # Interleaved rounds: drift on this shared machine hits every variant alike.
        for _ in range(opts.rounds):
            for loop_name in ("asyncio", "uvloop"):
                asyncio.run(fill(env, opts.jobs))
                rate = measure(loop_name, plain(settings, opts.jobs, prefetch))
                rates.setdefault(("plain", loop_name), []).append(rate)
                asyncio.run(fill(env, opts.jobs))
                rate = measure(loop_name, taskq_worker(env, opts.jobs))
                rates.setdefault(("taskq", loop_name), []).append(rate)
    finally:
        asyncio.run(teardown(base, vhost))
    baseline = statistics.median(rate for rate, _ in rates[("plain", "asyncio")])
    print(
        f"{opts.jobs} no-op jobs, prefetch {prefetch}, one process, median of {opts.rounds} rounds"
    )
    print(f"{'consumer':52} {'jobs/s':>8} {'ratio':>6} {'CPU µs/job':>11}")
    labels = {
        "plain": "plain aio-pika, ack each message",
        "taskq": "taskq worker, every feature on (SQLite)",
    }
    for (kind, loop_name), values in rates.items():
        rate = statistics.median(rate for rate, _ in values)
        cpu_us = statistics.median(cpu for _, cpu in values) / opts.jobs * 1e6
        print(
            f"{labels[kind] + ', ' + loop_name:52} {rate:8.0f} {rate / baseline:6.2f} {cpu_us:11.0f}"
        )


async def setup(base: BrokerSettings, vhost: str, env: dict[str, str]) -> None:
    async with ManagementClient(base) as management:
        await management.create_vhost(vhost)
    backends = await open_backends(load_settings(env))
    await apply_topology(backends.topology, base.with_vhost(vhost))
    await backends.close()


async def teardown(base: BrokerSettings, vhost: str) -> None:
    async with ManagementClient(base) as management:
        await management.delete_vhost(vhost)


if __name__ == "__main__":
    main()

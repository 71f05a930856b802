"""Enqueue with confirms: taskq's Python client against raw aio-pika, same event loop, same run.

Usage: .venv/bin/python bench/publish.py [--single 2000] [--many 20000] [--window 500]
       [--rounds 5] [--postgres URL] [--uvloop] [--sealed]

Every variant publishes persistent, mandatory messages with publisher confirms to
``taskq.jobs`` (routing key ``email``) in a scratch vhost holding the default topology, and the
queue is purged after each run. Rounds interleave the variants (the order reversed every other
round) so drift on a shared machine hits them alike. Each row gives the median rate with its
min-max, the process CPU per job (the SQLite thread and asyncpg included) and the ratio to
its table's baseline.

One at a time (each call awaited before the next):

- ``aio-pika publish`` (THE baseline): what a user writes by hand: ``orjson`` body with an id,
  type and payload, an ``aio_pika.Message`` with the message id, persistent, mandatory.
- ``AsyncClient.submit (<store>)``: the whole submission: validation, job record, store
  insert, envelope, confirmed publish, job view; with ``--sealed`` also each store's client
  with ``TASKQ_DATA_KEYS`` set (the payload sealed with AES-256-GCM before it is stored and sent).

Windowed (``--window`` confirms in flight):

- ``aio-pika publish, window`` (THE baseline): the same messages, ``asyncio.gather`` over
  ``--window`` publishes at a time.
- ``AsyncClient.submit_many (<store>)``: lists of ``--window`` requests.
- ``ConfirmedPublisher.publish_many``: envelopes built in the run, no store: taskq's frames
  written a window at a time through ``producers/wire.py``.
- ``aiormq Channel.basic_publish``: the same envelopes and properties through aiormq's public
  ``basic_publish`` (``wait=False``), ``asyncio.gather`` over each window: what the publisher
  would cost without ``producers/wire.py``, the one module that reaches into aiormq.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import aio_pika
import aiormq
import asyncpg
import orjson
from aio_pika.abc import AbstractExchange
from aiormq import spec

from producers.client import AsyncClient
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.envelope import Envelope
from topology.loader import load_topology
from topology.sealing import new_key
from topology.settings import BrokerSettings, PublisherSettings, load_settings

Run = Callable[[int], Awaitable[None]]


def payload(i: int) -> dict[str, object]:
    return {"to": f"user{i}@example.com", "template": "welcome", "n": i}


def raw_message(i: int) -> aio_pika.Message:
    job_id = str(uuid.uuid4())
    body = orjson.dumps({"id": job_id, "type": "email", "payload": payload(i)})
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=job_id,
    )


def raw_single(exchange: AbstractExchange) -> Run:
    async def run(n: int) -> None:
        for i in range(n):
            await exchange.publish(raw_message(i), "email", mandatory=True)

    return run


def raw_window(exchange: AbstractExchange, window: int) -> Run:
    async def run(n: int) -> None:
        for start in range(0, n, window):
            await asyncio.gather(
                *(
                    exchange.publish(raw_message(i), "email", mandatory=True)
                    for i in range(start, min(n, start + window))
                )
            )

    return run


def client_single(client: AsyncClient) -> Run:
    async def run(n: int) -> None:
        for i in range(n):
            await client.submit("email", payload(i))

    return run


def client_many(client: AsyncClient, window: int) -> Run:
    async def run(n: int) -> None:
        for start in range(0, n, window):
            requests = [
                JobRequest("email", payload(i)) for i in range(start, min(n, start + window))
            ]
            results = await client.submit_many(requests)
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed[:3]

    return run


def publisher_many(publisher: ConfirmedPublisher) -> Run:
    async def run(n: int) -> None:
        envelopes = [Envelope.new("email", payload(i)) for i in range(n)]
        results = await publisher.publish_many(envelopes)
        assert not any(results), results

    return run


def basic_publish_many(channel: aiormq.Channel, window: int) -> Run:
    async def run(n: int) -> None:
        for start in range(0, n, window):
            envelopes = [
                Envelope.new("email", payload(i)) for i in range(start, min(n, start + window))
            ]
            await asyncio.gather(*(basic_publish(channel, e) for e in envelopes))

    return run


async def basic_publish(channel: aiormq.Channel, envelope: Envelope) -> None:
    props = envelope.properties()
    properties = spec.Basic.Properties(
        content_type=props.content_type,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.type,
        headers=dict(props.headers),
    )
    confirm = await channel.basic_publish(
        envelope.encode(),
        exchange="taskq.jobs",
        routing_key="email",
        properties=properties,
        mandatory=True,
        wait=False,
    )
    assert isinstance(confirm, spec.Basic.Ack), confirm


@dataclass
class Variant:
    name: str
    run: Run
    count: int
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


async def measure(
    variants: list[Variant], rounds: int, purge: Callable[[], Awaitable[object]]
) -> None:
    for variant in variants:  # warm up: connections, prepared statements, code paths
        await variant.run(min(variant.count, 200))
        await purge()
    for round_no in range(rounds):
        for variant in variants if round_no % 2 == 0 else reversed(variants):
            cpu, wall = time.process_time(), time.perf_counter()
            await variant.run(variant.count)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            variant.rates.append(variant.count / wall)
            variant.cpu_us.append(cpu / variant.count * 1e6)
            await purge()


def table(title: str, variants: list[Variant]) -> None:
    baseline = statistics.median(variants[0].rates)
    print(f"\n{title}")
    print(f"{'variant':44} {'jobs/s (min-max)':>24} {'CPU µs/job':>11} {'ratio':>6}")
    for v in variants:
        median = statistics.median(v.rates)
        spread = f"{median:,.0f} ({min(v.rates):,.0f}-{max(v.rates):,.0f})"
        cpu = statistics.median(v.cpu_us)
        print(f"{v.name:44} {spread:>24} {cpu:11.0f} {median / baseline:6.2f}")


@asynccontextmanager
async def postgres_database(url: str) -> AsyncIterator[str]:
    name = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench(settings: BrokerSettings, opts: argparse.Namespace) -> None:
    topology = compile_topology(load_topology())
    await apply_topology(topology, settings)
    amqp = settings.amqp_url.get_secret_value()
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect_robust(amqp)
        stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topology.jobs_exchange, ensure=False)
        queue = await channel.get_queue("taskq.email", ensure=False)
        publisher = await ConfirmedPublisher.connect(
            settings, topology, PublisherSettings(publish_window=opts.window)
        )
        stack.push_async_callback(publisher.close)
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="taskq-bench-"))
        stores = {"SQLite": f"sqlite:///{work}/jobs.sqlite3"}
        if opts.postgres:
            stores["PostgreSQL"] = await stack.enter_async_context(postgres_database(opts.postgres))
        clients: dict[str, AsyncClient] = {}
        for name, url in stores.items():
            env = {
                "TASKQ_AMQP_URL": amqp,
                "TASKQ_STORE_URL": url,
                "TASKQ_BLOB_URL": f"file:{work}/b",
            }
            clients[name] = await stack.enter_async_context(await AsyncClient.connect(env))
            if opts.sealed:
                sealed = {**env, "TASKQ_DATA_KEYS": f"bench:{new_key()}"}
                connected = await AsyncClient.connect(sealed)
                clients[f"{name}, sealed"] = await stack.enter_async_context(connected)

        single = [Variant("aio-pika publish", raw_single(exchange), opts.single)]
        single += [
            Variant(f"AsyncClient.submit ({name})", client_single(c), opts.single)
            for name, c in clients.items()
        ]
        many = [
            Variant(
                f"aio-pika publish, window {opts.window}",
                raw_window(exchange, opts.window),
                opts.many,
            )
        ]
        many += [
            Variant(f"AsyncClient.submit_many ({name})", client_many(c, opts.window), opts.many)
            for name, c in clients.items()
        ]
        many.append(
            Variant("ConfirmedPublisher.publish_many", publisher_many(publisher), opts.many)
        )
        plain = await connection.channel(publisher_confirms=True, on_return_raises=True)
        underlay = cast(aiormq.Channel, await plain.get_underlay_channel())
        many.append(
            Variant(
                "aiormq Channel.basic_publish", basic_publish_many(underlay, opts.window), opts.many
            )
        )
        await measure(single + many, opts.rounds, queue.purge)

    loop = "uvloop" if opts.uvloop else "asyncio"
    print(f"{opts.rounds} interleaved rounds, {loop} loop, {settings.describe()}")
    table(f"One at a time ({opts.single} jobs per run)", single)
    table(f"{opts.window} confirms in flight ({opts.many} jobs per run)", many)


async def main(opts: argparse.Namespace) -> None:
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        try:
            await bench(base.with_vhost(vhost), opts)
        finally:
            await management.delete_vhost(vhost)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--many", type=int, default=20000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL to add that store")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument(
        "--sealed", action="store_true", help="add each client with payloads sealed at rest"
    )
    options = parser.parse_args()
    if options.uvloop:
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))

"""Stream ingest: a Redis stream source's rate against the confirmed publisher's, same run.

Usage: .venv/bin/python bench/stream_ingest.py [--entries 20000] [--rounds 3] [--batch 100]

Needs RabbitMQ with the management API and Redis on 127.0.0.1:6379 (``TASKQ_REDIS_URL``). In a
scratch vhost holding a topology with one group and one stream source, each round runs, in
turn (the order reversed every other round), purging the queues after each:

- ``ConfirmedPublisher.publish_many`` (THE baseline, a process of its own): ``--entries`` job
  envelopes published in windows of ``--batch``, confirms awaited per window, no store;
- ``Submitter.submit_many`` (for reference, a process of its own): the same jobs through the
  submitter that every door shares, in windows of ``--batch``, each with its id made as the
  source makes it from an entry id (no key to claim: published at once, its row written
  behind the confirm): what the source does per entry, without Redis;
- ``taskctl stream`` (the source, a process of its own): a stream preloaded with ``--entries``
  entries, read ``--batch`` at a time through its consumer group, each entry's job validated,
  its id made from the entry id, published with confirms, its row stored (SQLite) behind
  the confirm, and the entries acknowledged. Timed from its first acknowledged entry to its last, so its start-up
  is left out; CPU is the source process's over the same span.

Each row gives the median jobs/s with its min-max, the process's CPU per job, and the ratio to
the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from http_ingest import Load, Variant, cpu_seconds, purge, table

from producers.backends import confirmed, open_producer
from producers.publisher import ConfirmedPublisher
from producers.streams.entries import entry_job_id
from producers.submit import JobRequest, Submitted
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.envelope import Envelope, new_job_id
from topology.loader import load_topology
from topology.reserved import stream_producer
from topology.settings import load_settings
from topology.spec import Priority

TOPOLOGY = """
groups:
  orders: {{jobs: ["order.#"]}}
streams:
  shop: {{stream: "{stream}", job: "order.{{event}}", event_field: kind, payload_field: data, batch: {batch}}}
"""
PAYLOAD = {"order": 1234, "customer": "c-42", "total_cents": 9900}


def publisher_variant(opts: argparse.Namespace, env: dict[str, str]) -> Variant:
    """Run the baseline publisher as a process of its own; it reports its own rate and CPU."""

    def load() -> Load:
        argv = [sys.executable, __file__, "--publisher", str(opts.entries), str(opts.batch)]
        return reported(argv, env)

    return Variant(f"ConfirmedPublisher, windows of {opts.batch}", load)


def reported(argv: list[str], env: dict[str, str]) -> Load:
    """Run a load process that prints [jobs/s, CPU µs/job]; raise with its stderr if it fails."""
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[2]} failed: {done.stderr.decode()[-2000:]}")
    rate, cpu_us = orjson.loads(done.stdout)
    return Load(rate, 0, cpu_us)


def submitter_variant(opts: argparse.Namespace, env: dict[str, str]) -> Variant:
    """Run the submissions as a process of its own; it reports its own rate and CPU."""

    def load() -> Load:
        argv = [sys.executable, __file__, "--submitter", str(opts.entries), str(opts.batch)]
        return reported(argv, env)

    return Variant(f"Submitter.submit_many, entry ids, windows of {opts.batch}", load)


def source_variant(
    opts: argparse.Namespace, env: dict[str, str], work: Path, redis_url: str
) -> Variant:
    """Preload a fresh stream, run ``taskctl stream`` over it, and time it from first ack to last."""

    def load() -> Load:
        return asyncio.run(drain(opts, env, work, redis_url))

    return Variant("taskctl stream (SQLite)", load)


async def drain(opts: argparse.Namespace, env: dict[str, str], work: Path, redis_url: str) -> Load:
    stream = f"taskq-bench:{uuid.uuid4().hex[:10]}:orders"
    path = work / f"{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(TOPOLOGY.format(stream=stream, batch=opts.batch), encoding="utf-8")
    redis = aioredis.Redis.from_url(redis_url)
    data = orjson.dumps(PAYLOAD).decode()
    try:
        for start in range(0, opts.entries, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(min(1000, opts.entries - start)):
                    pipe.xadd(stream, {"kind": "paid", "data": data})
                await pipe.execute()
        argv = [sys.executable, "-m", "taskctl", "stream", "shop", "--consumer", "bench-1"]
        process = subprocess.Popen(  # noqa: ASYNC220 - it runs for the whole measurement
            argv,
            env={**os.environ, **env, "TASKQ_TOPOLOGY": str(path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            first: tuple[float, float, int] | None = None
            while True:  # a child process: its progress is only seen in the group's counters
                acked = await acknowledged(redis, stream)
                now = time.perf_counter()
                if first is None and acked > 0:
                    first = (now, cpu_seconds(process.pid), acked)
                if acked >= opts.entries:
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"the source exited with {process.returncode}")
                await asyncio.sleep(0.01)
            assert first is not None
            jobs = acked - first[2]
            used = cpu_seconds(process.pid) - first[1]
            return Load(jobs / (now - first[0]), 0, used / jobs * 1e6)
        finally:
            process.terminate()
            process.wait(30)
    finally:
        await redis.delete(stream, f"{stream}.dead")
        await redis.aclose()


async def acknowledged(redis: aioredis.Redis, stream: str) -> int:
    """Return how many entries the source's group has read and acknowledged."""
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:  # no group yet: the source is starting
        return 0
    for group in groups:
        return int(group["entries-read"] or 0) - int(group["pending"])
    return 0


async def publisher(entries: int, window: int) -> None:
    """Publish ``entries`` job envelopes in confirmed windows; print [jobs/s, CPU µs/job]."""
    settings = load_settings()
    topology = compile_topology(load_topology())
    sender = await ConfirmedPublisher.connect(settings.broker, topology, settings.publisher)
    now = datetime.now(UTC)

    def envelope() -> Envelope:
        job_id = new_job_id()
        return Envelope.model_construct(
            id=job_id,
            type="order.paid",
            payload=PAYLOAD,
            priority=Priority.MEDIUM,
            idempotency_key=job_id,
            created_at=now,
        )

    await sender.publish(envelope())  # connected and warm before the clock starts
    cpu, started = time.process_time(), time.perf_counter()
    for start in range(0, entries, window):
        errors = await sender.publish_many(
            [envelope() for _ in range(min(window, entries - start))]
        )
        if any(errors):
            raise RuntimeError(f"publish failed: {next(e for e in errors if e)}")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await sender.close()
    print(orjson.dumps([entries / wall, cpu / entries * 1e6]).decode())


async def submitted(entries: int, window: int) -> None:
    """Submit ``entries`` jobs as the source does, in windows; print [jobs/s, CPU µs/job]."""
    producer = await open_producer(load_settings(), confirmed("bench submitter"))
    submitter = producer.submitter
    run = uuid.uuid4().hex[:8]

    source = stream_producer("shop")  # its types are the source's own

    def request(n: int) -> JobRequest:
        job_id = entry_job_id("shop", run, f"{int(time.time() * 1000)}-{n + 1}")
        return JobRequest(type="order.paid", payload=PAYLOAD, source=source, job_id=job_id)

    await submitter.submit_many([request(-1)], producer=source)  # connected, warm
    cpu, started = time.process_time(), time.perf_counter()
    for start in range(0, entries, window):
        batch = [request(n) for n in range(start, min(entries, start + window))]
        results = await submitter.submit_many(batch, producer=source)
        failed = [r for r in results if not isinstance(r, Submitted)]
        if failed:
            raise RuntimeError(f"submission failed: {failed[0]}")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await producer.close()
    print(orjson.dumps([entries / wall, cpu / entries * 1e6]).decode())


async def main(opts: argparse.Namespace) -> None:
    base = load_settings().broker
    redis_url = os.environ.get("TASKQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    sample = work / "topology.yaml"
    sample.write_text(TOPOLOGY.format(stream="unused", batch=opts.batch), encoding="utf-8")
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        try:
            await apply_topology(compile_topology(load_topology(sample)), base.with_vhost(vhost))
            env = {
                "TASKQ_AMQP_URL": base.with_vhost(vhost).amqp_url.get_secret_value(),
                "TASKQ_TOPOLOGY": str(sample),
                "TASKQ_STORE_URL": f"sqlite:///{work}/jobs.sqlite3",
                "TASKQ_BLOB_URL": f"file:{work}/blobs",
                "TASKQ_REDIS_URL": redis_url,
                "TASKQ_LOG_LEVEL": "WARNING",
            }
            variants = [
                publisher_variant(opts, env),
                submitter_variant(opts, env),
                source_variant(opts, env, work, redis_url),
            ]
            loop = asyncio.get_running_loop()

            def after() -> None:
                asyncio.run_coroutine_threadsafe(purge(management, vhost), loop).result()

            load_before = os.getloadavg()[0]
            await asyncio.to_thread(measure, variants, opts.rounds, after)
            print(
                f"{opts.entries} jobs x {opts.rounds} interleaved rounds, windows of "
                f"{opts.batch}; load average {load_before:.2f} before, "
                f"{os.getloadavg()[0]:.2f} after"
            )
            table("Ingest", variants)
            rates = [statistics.median(v.rates) for v in variants]
            print(f"source / confirmed publisher: {rates[2] / rates[0]:.2f}")
            print(f"source / submissions: {rates[2] / rates[1]:.2f}")
        finally:
            await management.delete_vhost(vhost)


def measure(variants: list[Variant], rounds: int, after) -> None:
    """Run each variant once a round, the order reversed every other round (``after`` each)."""
    for round_no in range(rounds):
        for v in variants if round_no % 2 == 0 else reversed(variants):
            done = v.load()
            v.rates.append(done.jobs_per_s)
            v.cpu_us.append(done.cpu_us)
            after()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("--publisher", "--submitter"):
        run = publisher if sys.argv[1] == "--publisher" else submitted
        asyncio.run(run(int(sys.argv[2]), int(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    asyncio.run(main(parser.parse_args()))

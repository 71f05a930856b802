"""Urgent start latency behind a backlog: how long an urgent job waits when low ones pile up.

Usage: .venv/bin/python bench/urgent_latency.py [--backlog 50000] [--urgent 50]

In a scratch vhost with the default topology, it publishes ``--backlog`` low-priority email
jobs, starts one taskq worker for the email group (every feature on, SQLite store), waits until
it is busy, then submits ``--urgent`` urgent jobs one at a time (each after the previous one
started) and reports how long each took from its confirmed submission (submit() returning) to
its handler starting; a job that starts before submit() has returned counts as zero.
The baseline is the same measurement with an idle worker (no backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from producers.backends import Backends, confirmed, open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from telemetry.logs import configure_logging
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.envelope import Envelope
from topology.settings import WorkerSettings, load_settings
from topology.spec import Priority


async def measure(backends: Backends, publisher: ConfirmedPublisher, urgent: int) -> list[float]:
    registry = HandlerRegistry()
    started: dict[str, float] = {}
    # Made on first use by either side: the job can start before submit() returns its id
    # (the worker runs it while the submitter is still completing its idempotency record).
    events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @registry.handler("email.#")
    async def work(payload: object, ctx: JobContext) -> None:
        if ctx.job_id not in started:
            started[ctx.job_id] = time.perf_counter()
            events[ctx.job_id].set()

    group = backends.topology.group("email")
    worker = Worker(
        Deps(
            backends.topology,
            group,
            registry,
            backends.store,
            backends.blobs,
            publisher,
            WorkerSettings(),
        )
    )
    await worker.start(backends.settings.broker)
    await asyncio.sleep(2)  # let the worker fill its prefetch from the backlog
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.settings.submit
    )
    waits = []
    for _ in range(urgent):
        done = await submitter.submit(JobRequest(type="email", priority=Priority.URGENT))
        confirmed = time.perf_counter()
        await asyncio.wait_for(events[done.job_id].wait(), 30)
        # From the confirmed submission; a start before the confirm counts as zero wait.
        waits.append(max(0.0, started[done.job_id] - confirmed) * 1000)
    await worker.stop(grace=1)
    return waits


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--urgent", type=int, default=50)
    opts = parser.parse_args()
    configure_logging("INFO")  # the level `taskctl worker` runs at by default
    base = load_settings().broker
    rows = []
    for backlog in (0, opts.backlog):
        vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
        work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
        async with TestsManagementClient(base) as management:
            await management.create_vhost(vhost)
            try:
                settings = base.with_vhost(vhost)
                env = {
                    "TASKQ_AMQP_URL": settings.amqp_url.get_secret_value(),
                    "TASKQ_STORE_URL": f"sqlite:///{work}/jobs.sqlite3",
                    "TASKQ_BLOB_URL": f"file:{work}/blobs",
                }
                backends = await open_backends(load_settings(env))
                await apply_topology(backends.topology, settings)
                publisher = await confirmed("bench")(backends)
                # The backlog goes straight to the broker (no job records): the worker runs
                # them anyway, and filling the store would only slow the setup down.
                low = [Envelope.new("email", None, priority=Priority.LOW) for _ in range(backlog)]
                for start in range(0, backlog, 2000):
                    await publisher.publish_many(low[start : start + 2000])
                waits = await measure(backends, publisher, opts.urgent)
                await publisher.close()
                await backends.close()
            finally:
                await management.delete_vhost(vhost)
        waits.sort()
        p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        rows.append((backlog, statistics.median(waits), p99, waits[-1]))
    print(f"{opts.urgent} urgent jobs, submitted one at a time; start latency in ms")
    print(f"{'backlog of low jobs':>20} {'p50':>8} {'p99':>8} {'max':>8}")
    for backlog, p50, p99, top in rows:
        print(f"{backlog:>20} {p50:8.1f} {p99:8.1f} {top:8.1f}")


if __name__ == "__main__":
    asyncio.run(main())

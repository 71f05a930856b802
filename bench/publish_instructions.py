"""Instructions per job of one submission at a time, taskq's client against raw aio-pika, counted by callgrind.

Usage: .venv/bin/python bench/publish_instructions.py [--small 100] [--large 600]   (needs valgrind)

Rates on a shared two-core machine move with whatever else runs; the instructions a process
executes do not. Each variant runs twice under ``valgrind --tool=callgrind`` (the same setup,
300 warm-up jobs, then three runs of ``--small`` or of ``--large`` jobs, as in
``bench/publish.py``), and the difference between the two totals, divided by the difference in
jobs, is what one more job costs the process: the event loop, the client, the store's thread
and the socket calls, without the startup. A run takes a few minutes (callgrind runs the
interpreter about 50 times slower); the broker and the store are real.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aio_pika
from publish import client_single, raw_single

from producers.client import AsyncClient
from tests.broker import TestsManagementClient
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import load_settings

WARM_UP, ROUNDS = 300, 3


async def child(variant: str, jobs: int) -> None:
    """Publish ``WARM_UP`` jobs, then ``ROUNDS`` runs of ``jobs``, the way ``variant`` does."""
    base = load_settings().broker
    vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
    async with TestsManagementClient(base) as management:
        await management.create_vhost(vhost)
        try:
            settings = base.with_vhost(vhost)
            topology = compile_topology(load_topology())
            await apply_topology(topology, settings)
            amqp = settings.amqp_url.get_secret_value()
            connection = await aio_pika.connect_robust(amqp)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(topology.jobs_exchange, ensure=False)
            queue = await channel.get_queue("taskq.email", ensure=False)
            with tempfile.TemporaryDirectory(prefix="taskq-bench-") as work:
                store = f"sqlite:///{work}/jobs.sqlite3"
                env = {"TASKQ_AMQP_URL": amqp, "TASKQ_STORE_URL": store}
                async with await AsyncClient.connect(
                    {**env, "TASKQ_BLOB_URL": f"file:{work}/b"}
                ) as client:
                    run = raw_single(exchange) if variant == "raw" else client_single(client)
                    await run(WARM_UP)
                    for _ in range(ROUNDS):
                        await queue.purge()
                        await run(jobs)
            await connection.close()
        finally:
            await management.delete_vhost(vhost)


def instructions(variant: str, jobs: int) -> int:
    """Return the instructions a whole child process of ``variant`` with ``jobs`` a run executed."""
    with tempfile.TemporaryDirectory() as out:
        counted = Path(out) / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={counted}",
                sys.executable,
                __file__,
                "--child",
                variant,
                str(jobs),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"{variant} with {jobs} jobs failed:\n{done.stderr[-3000:]}")
        summary = re.search(r"^summary: (\d+)", counted.read_text(), re.MULTILINE)
        assert summary, "callgrind wrote no summary"
        return int(summary.group(1))


def main(options: argparse.Namespace) -> None:
    extra = ROUNDS * (options.large - options.small)
    per_job = {}
    for variant, name in (("raw", "aio-pika publish"), ("taskq", "AsyncClient.submit (SQLite)")):
        small, large = instructions(variant, options.small), instructions(variant, options.large)
        per_job[name] = (large - small) / extra
        print(f"{name:32} {per_job[name]:>12,.0f} instructions/job", flush=True)
    base = per_job["aio-pika publish"]
    print(f"ratio {per_job['AsyncClient.submit (SQLite)'] / base:.2f} (taskq / raw)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=600)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "JOBS"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        asyncio.run(child(opts.child[0], int(opts.child[1])))
    else:
        main(opts)

"""Scaling with processes: one backlog drained by 1, 2, ... worker processes, taskq beside raw.

Usage: .venv/bin/python bench/worker_scaling.py [--jobs 40000] [--workers 1,2,3,4] [--rounds 2]
       [--only taskq,aio-pika-uvloop] [--postgres URL]

For each worker count, in interleaved rounds, the system's own producer enqueues ``--jobs``
no-op jobs (the harness of bench/peers.py), then that many worker processes start together on
the one queue. The rate is read from the queue itself (a passive declare every 20 ms): the
time the ready count takes to fall from 90 % to 10 % of the backlog, so start-up and the last
prefetch windows are left out. CPU µs per job sums every worker process's CPU over the same
span. taskq's workers share one job store: SQLite (one file, as on one machine) or, with
``--postgres``, a scratch PostgreSQL database per run. Each row gives the median jobs/s with
its min-max, the CPU per job and the speed-up over one worker of the same system.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg
import pika
from worker_runs import RAW_SYSTEMS, TASKQ, Scratch, System, _stop, load, summary

SYSTEMS = {s.name: s for s in (*RAW_SYSTEMS, TASKQ)}
POLL = 0.02
HIGH, LOW = 0.9, 0.1  # the span of the backlog the rate is read over
HERE = str(Path(__file__).parent)


def cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU time from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ 100)


def drain(
    scratch: Scratch, system: System, jobs: int, workers: int, store: str | None
) -> tuple[float, float]:
    """Enqueue ``jobs``, drain them with ``workers`` processes; return jobs/s and CPU µs per job."""
    folder = Path(tempfile.mkdtemp(prefix=f"{system.name}-{workers}-", dir=scratch.work))
    env = scratch.env(system, jobs, folder)
    if store is not None and system.taskq:
        env["TASKQ_STORE_URL"] = store
    subprocess.run(system.enqueue, env=env, check=True, cwd=HERE)
    logs = [(folder / f"worker-{i}.log").open("wb") for i in range(workers)]
    procs = [
        subprocess.Popen(system.worker, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
        for log in logs
    ]
    try:
        (t0, c0), (t1, c1) = watch(scratch.url, system.queue, jobs, procs)
    finally:
        codes = [_stop(p) for p in procs]
        for log in logs:
            log.close()
    if any(codes):
        raise RuntimeError(f"{system.name}: exit codes {codes} on SIGTERM; logs in {folder}")
    if scratch.messages(system.queue):
        raise RuntimeError(f"{system.name}: messages left in {system.queue}")
    if system.verify:
        subprocess.run(system.verify, env=env, check=True, cwd=HERE)
    counted = jobs * (HIGH - LOW)
    return counted / (t1 - t0), (c1 - c0) / counted * 1e6


def watch(
    url: str, queue: str, jobs: int, procs: list[subprocess.Popen[bytes]]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Return (clock, CPU of all workers) when the ready count passed 90 % and 10 % of ``jobs``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    marks: list[tuple[float, float]] = []
    deadline = time.monotonic() + 900
    try:
        for threshold in (jobs * HIGH, jobs * LOW, 0):
            while channel.queue_declare(queue, passive=True).method.message_count > threshold:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker on {queue} exited early")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{queue} not drained within 900 s")
                time.sleep(POLL)
            marks.append((time.perf_counter(), sum(cpu_seconds(p.pid) for p in procs)))
        # The last prefetch windows finish before the stop (SIGTERM drains in any case).
        time.sleep(1.0)
    finally:
        connection.close()
    return marks[0], marks[1]


async def scratch_database(admin_url: str) -> str:
    """Create a PostgreSQL database of its own and return its URL."""
    name = f"taskq_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(admin_url: str, url: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--workers", default="1,2,3,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="taskq,aio-pika-uvloop")
    parser.add_argument(
        "--postgres", help="admin URL; taskq's workers then share a PostgreSQL store"
    )
    opts = parser.parse_args()
    counts = [int(n) for n in opts.workers.split(",")]
    systems = [SYSTEMS[name] for name in opts.only.split(",")]
    runs = [(s, n) for s in systems for n in counts]
    results: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    print(f"before: {load()}", flush=True)
    with Scratch() as scratch:
        for s in systems:
            if not s.taskq:
                scratch.declare(s.queue)
        for round_no in range(opts.rounds):
            order = runs if round_no % 2 == 0 else list(reversed(runs))
            for system, workers in order:
                store = None
                if opts.postgres and system.taskq:
                    store = asyncio.run(scratch_database(opts.postgres))
                try:
                    rate, cpu = drain(scratch, system, opts.jobs, workers, store)
                finally:
                    if store is not None:
                        asyncio.run(drop_database(opts.postgres, store))
                results[(system.name, workers)].append((rate, cpu))
                print(
                    f"round {round_no + 1}: {system.name:16} x{workers}  {rate:7.0f} jobs/s"
                    f"  {cpu:5.0f} CPU µs/job",
                    flush=True,
                )
    print(f"\n{opts.jobs} jobs, {opts.rounds} interleaved rounds; after: {load()}\n")
    store_name = "PostgreSQL" if opts.postgres else "SQLite"
    print("| system | worker processes | jobs/s, median (min-max) | CPU µs/job | speed-up over 1 |")
    print("|---|---|---|---|---|")
    for system in systems:
        one = statistics.median(r for r, _ in results[(system.name, counts[0])])
        for workers in counts:
            rates = [r for r, _ in results[(system.name, workers)]]
            med, lo, hi = summary(rates)
            cpu = statistics.median(c for _, c in results[(system.name, workers)])
            label = system.label + (f" ({store_name} store)" if system.taskq else "")
            print(
                f"| {label} | {workers} | {med:,.0f} ({lo:,.0f}-{hi:,.0f}) | {cpu:.0f} | {med / one:.2f}x |"
            )


if __name__ == "__main__":
    main()

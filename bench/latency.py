"""Submit-to-start latency at a steady rate: taskq against a raw aio-pika producer and consumer.

Usage: bash bench/setup.sh, then
  .venv-bench/bin/python bench/latency.py [--jobs 2000] [--rate 500] [--rounds 3] [--json FILE]

With one idle worker process already consuming, the bench sends ``--jobs`` jobs at ``--rate``
jobs/s (open loop: each send starts on schedule, whether or not the previous one finished),
each stamped with ``time.time_ns()`` just before it is sent; the job's handler takes the same
clock when it starts, and the worker writes every difference to a file the bench reads back.

- raw: an aio-pika publish with publisher confirms of a persistent 239-byte JSON message;
  the worker is an aio-pika consumer on uvloop acking each message (``noop/raw_jobs.py``);
- taskq: ``AsyncClient.submit`` (store, confirmed publish); the worker is ``taskctl worker
  email`` with every feature on and a SQLite job store shared with the client.

Both producers run on uvloop in this process. Rounds are interleaved, every other one reversed;
figures are medians over rounds with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aio_pika
import uvloop
from noop.record import encode, payload
from worker_runs import BIN, PYTHON, Scratch, System, load, summary

from producers.client import AsyncClient

RAW = System(
    "raw",
    "raw aio-pika, publish with confirms; consumer on uvloop, ack each",
    (PYTHON, "-m", "noop.raw_jobs", "consume", "--client", "aio-pika", "--loop", "uvloop"),
    queue="bench.latency",
)
TASKQ = System(
    "taskq",
    "taskq, AsyncClient.submit; `taskctl worker email`",
    (str(BIN / "taskctl"), "worker", "email"),
    queue="taskq.email",
    also_empty=("taskq.email.dlq",),
    taskq=True,
    verify=(PYTHON, "-m", "noop.taskq_jobs", "verify"),
)


async def paced(
    jobs: int, rate: float, send: Callable[[int], Coroutine[Any, Any, object]]
) -> float:
    """Start ``send(seq)`` for each job on a steady schedule; return the rate actually reached."""
    started = time.perf_counter()
    sends: list[asyncio.Task[object]] = []
    for seq in range(jobs):
        wait = started + seq / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        sends.append(asyncio.create_task(send(seq)))
    reached = (jobs - 1) / (time.perf_counter() - started)
    await asyncio.gather(*sends)
    return reached


async def raw_producer(env: Mapping[str, str], jobs: int, rate: float) -> float:
    connection = await aio_pika.connect_robust(env["BENCH_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)

    async def send(seq: int) -> None:
        body = encode(payload(seq, time.time_ns()))
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await channel.default_exchange.publish(message, routing_key=RAW.queue)

    try:
        return await paced(jobs, rate, send)
    finally:
        await connection.close()


async def taskq_producer(env: Mapping[str, str], jobs: int, rate: float) -> float:
    async with await AsyncClient.connect(env) as client:
        return await paced(
            jobs, rate, lambda seq: client.submit("email", payload(seq, time.time_ns()))
        )


PRODUCERS = {"raw": raw_producer, "taskq": taskq_producer}


class Row(NamedTuple):
    """One run's submit-to-start latencies (ms) and the rate the producer reached."""

    p50: float
    p99: float
    max: float
    sent_per_s: float


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_once(scratch: Scratch, system: System, jobs: int, rate: float) -> Row:
    """Start ``system``'s worker, send it ``jobs`` at ``rate`` and return what it measured."""
    reached: list[float] = []

    def produce(env: Mapping[str, str]) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            reached.append(runner.run(PRODUCERS[system.name](env, jobs, rate)))

    result = scratch.run(system, jobs, produce, timeout=jobs / rate + 120)
    ms = [ns / 1e6 for ns in result.latency_ns]
    return Row(percentile(ms, 50), percentile(ms, 99), max(ms), reached[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    opts = parser.parse_args()
    before = load()
    rows: dict[str, list[Row]] = {RAW.name: [], TASKQ.name: []}
    with Scratch() as scratch:
        scratch.declare(RAW.queue)
        for round_no in range(opts.rounds):
            # Interleaved, every other round reversed: drift on a shared machine hits both alike.
            for system in (RAW, TASKQ) if round_no % 2 == 0 else (TASKQ, RAW):
                row = run_once(scratch, system, opts.jobs, opts.rate)
                rows[system.name].append(row)
                print(
                    f"round {round_no + 1}: {system.name:6} p50 {row.p50:7.2f} ms  "
                    f"p99 {row.p99:7.2f} ms  max {row.max:7.2f} ms  "
                    f"(sent at {row.sent_per_s:.0f} jobs/s)",
                    flush=True,
                )
    after = load()
    report(rows, opts, before, after)
    if opts.json:
        data = {"jobs": opts.jobs, "rate": opts.rate, "rounds": opts.rounds}
        data |= {"load_before": before, "load_after": after}
        data["systems"] = {name: [r._asdict() for r in runs] for name, runs in rows.items()}
        opts.json.write_text(json.dumps(data, indent=2))


def report(rows: dict[str, list[Row]], opts: argparse.Namespace, before: str, after: str) -> None:
    print(
        f"\n{opts.jobs} jobs at {opts.rate:.0f}/s, {opts.rounds} interleaved rounds; "
        f"before: {before}; after: {after}\n"
    )
    print("| submit to handler start | p50 ms | p99 ms | max ms | sent at jobs/s |")
    print("|---|---|---|---|---|")
    medians: dict[str, Row] = {}
    for system in (RAW, TASKQ):
        spans = [summary(column) for column in zip(*rows[system.name], strict=True)]
        medians[system.name] = Row(*(mid for mid, _, _ in spans))
        cells = [f"{mid:.2f} ({lo:.2f}-{hi:.2f})" for mid, lo, hi in spans[:3]]
        print(f"| {system.label} | " + " | ".join(cells) + f" | {spans[3][0]:,.0f} |")
    raw, taskq = medians[RAW.name], medians[TASKQ.name]
    print(
        f"\ntaskq / raw: p50 {taskq.p50 / raw.p50:.2f}x, p99 {taskq.p99 / raw.p99:.2f}x "
        "(target: each ≤ 2.0)"
    )


if __name__ == "__main__":
    main()

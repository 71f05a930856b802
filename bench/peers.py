"""taskq's worker against its peers: the same no-op job through one worker process of each.

Usage: bash bench/setup.sh, then
  .venv-bench/bin/python bench/peers.py [--jobs 20000] [--rounds 3] [--only taskq,celery]
                                        [--json results.json] [--profile DIR]

Every system gets ``--jobs`` jobs carrying the same 239-byte JSON payload as persistent messages
on a durable classic queue, enqueued by its own producer before its worker starts, and runs
them through its own worker process with its defaults:

- raw aio-pika (asyncio loop, then uvloop): ``queue.consume``, prefetch 32, ack each message;
- raw aiormq on uvloop with ``basic_ack(multiple=True)`` every 16 deliveries (reference line);
- FastStream: ``faststream run`` of one ``RabbitBroker`` subscriber;
- Celery: ``celery worker --pool solo`` (one process), py-amqp transport;
- Dramatiq: ``dramatiq --processes 1 --threads 8``, RabbitmqBroker;
- taskq: ``taskctl worker email`` (uvloop, the default topology, a SQLite job store, every
  feature on, logs at INFO) over jobs submitted with ``AsyncClient.submit_many``.

The rate counts from the 1st to the N-th completion (start-up excluded); CPU µs per job is the
worker process's CPU time over the same span / (N - 1). Rounds are interleaved, every other one
in reverse order; figures are medians with min-max. All of it runs in a scratch vhost.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

from worker_runs import BIN, PYTHON, Result, Scratch, System, load, summary

RAW = (PYTHON, "-m", "noop.raw_jobs")
SYSTEMS = (
    System(
        "aio-pika",
        "raw aio-pika consumer, asyncio loop, prefetch 32, ack each message",
        (*RAW, "consume", "--client", "aio-pika", "--loop", "asyncio"),
        (*RAW, "enqueue"),
        queue="bench.aio-pika",
    ),
    System(
        "aio-pika-uvloop",
        "raw aio-pika consumer, uvloop, prefetch 32, ack each message",
        (*RAW, "consume", "--client", "aio-pika", "--loop", "uvloop"),
        (*RAW, "enqueue"),
        queue="bench.aio-pika-uvloop",
    ),
    System(
        "aiormq-batched",
        "raw aiormq consumer, uvloop, ack every 16 with `multiple` (reference)",
        (*RAW, "consume", "--client", "aiormq", "--loop", "uvloop"),
        (*RAW, "enqueue"),
        queue="bench.aiormq",
    ),
    System(
        "faststream",
        f"FastStream {version('faststream')} subscriber, defaults",
        (str(BIN / "faststream"), "run", "noop.faststream_jobs:app"),
        (PYTHON, "-m", "noop.faststream_jobs"),
        queue="bench.faststream",
    ),
    System(
        "celery",
        f"Celery {version('celery')}, solo pool",
        (str(BIN / "celery"), "-A", "noop.celery_jobs", "worker", "--pool", "solo"),
        (PYTHON, "-m", "noop.celery_jobs"),
        queue="celery",  # Celery's default queue
    ),
    System(
        "dramatiq",
        f"Dramatiq {version('dramatiq')}, 1 process x 8 threads",
        (str(BIN / "dramatiq"), "noop.dramatiq_jobs", "--processes", "1", "--threads", "8"),
        (PYTHON, "-m", "noop.dramatiq_jobs"),
        queue="default",  # Dramatiq's default queue
    ),
    System(
        "taskq",
        "taskq `taskctl worker email`, every feature on",
        (str(BIN / "taskctl"), "worker", "email"),
        (PYTHON, "-m", "noop.taskq_jobs"),
        queue="taskq.email",
        also_empty=("taskq.email.dlq",),
        taskq=True,
        verify=(PYTHON, "-m", "noop.taskq_jobs", "verify"),
    ),
)
PEERS = ("faststream", "celery", "dramatiq")
SAME_LOOP = "aio-pika-uvloop"  # taskctl worker runs on uvloop


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", help="comma-separated systems to run: " + ", ".join(s.name for s in SYSTEMS)
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--profile", type=Path, help="sample taskq's worker with py-spy into this folder"
    )
    opts = parser.parse_args()
    chosen = [s for s in SYSTEMS if not opts.only or s.name in opts.only.split(",")]
    if not chosen or opts.jobs < 2:
        parser.error("nothing to run: check --only and --jobs (at least 2)")
    before = load()
    results: dict[str, list[Result]] = {s.name: [] for s in chosen}
    with Scratch(opts.profile) as scratch:
        for round_no in range(opts.rounds):
            # Interleaved, every other round reversed: drift on a shared machine hits all alike.
            order = chosen if round_no % 2 == 0 else chosen[::-1]
            for system in order:
                result = scratch.run(system, opts.jobs)
                results[system.name].append(result)
                print(
                    f"round {round_no + 1}: {system.name:16} {result.rate:8.0f} jobs/s "
                    f"{result.cpu_us:6.0f} CPU µs/job, longest pause {result.longest_pause_ms:.0f} ms",
                    flush=True,
                )
    after = load()
    report(chosen, results, opts.jobs, opts.rounds, before, after)
    if opts.json:
        opts.json.write_text(json.dumps(as_json(chosen, results, opts, before, after), indent=2))


def report(
    chosen: list[System],
    results: dict[str, list[Result]],
    jobs: int,
    rounds: int,
    before: str,
    after: str,
) -> None:
    rate = {name: summary([r.rate for r in runs]) for name, runs in results.items()}
    cpu = {name: summary([r.cpu_us for r in runs]) for name, runs in results.items()}
    taskq = "taskq" in results
    print(f"\n{jobs} jobs, {rounds} interleaved rounds; before: {before}; after: {after}\n")
    columns = [
        "one worker process, its defaults",
        "jobs/s, median (min-max)",
        "CPU µs/job, median (min-max)",
        "longest pause, ms",
    ]
    if taskq:
        columns += ["taskq ÷ it, jobs/s", "its CPU/job ÷ taskq's"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for system in chosen:
        (r, r_lo, r_hi), (c, c_lo, c_hi) = rate[system.name], cpu[system.name]
        pause = max(run.longest_pause_ms for run in results[system.name])
        cells = [
            system.label,
            f"{r:,.0f} ({r_lo:,.0f}-{r_hi:,.0f})",
            f"{c:,.0f} ({c_lo:,.0f}-{c_hi:,.0f})",
            f"{pause:,.0f}",
        ]
        if taskq:
            cells += [f"{rate['taskq'][0] / r:.2f}", f"{c / cpu['taskq'][0]:.2f}"]
        print("| " + " | ".join(cells) + " |")
    if not taskq:
        return
    peers = [name for name in PEERS if name in rate]
    if peers:
        best = max(peers, key=lambda name: rate[name][0])
        print(
            f"\ntaskq vs the best of {'/'.join(peers)} ({best}), jobs/s: "
            f"{rate['taskq'][0] / rate[best][0]:.2f}x (target ≥ 1.2)"
        )
    if SAME_LOOP in rate:
        print(
            f"taskq vs raw aio-pika on uvloop, jobs/s: {rate['taskq'][0] / rate[SAME_LOOP][0]:.2f}x "
            "(stretch ≥ 1.0)"
        )


def as_json(
    chosen: list[System],
    results: dict[str, list[Result]],
    opts: argparse.Namespace,
    before: str,
    after: str,
) -> dict[str, object]:
    return {
        "jobs": opts.jobs,
        "rounds": opts.rounds,
        "load_before": before,
        "load_after": after,
        "systems": {
            s.name: {
                "label": s.label,
                "jobs_per_s": [r.rate for r in results[s.name]],
                "cpu_us_per_job": [r.cpu_us for r in results[s.name]],
                "longest_pause_ms": [r.longest_pause_ms for r in results[s.name]],
            }
            for s in chosen
        },
    }


if __name__ == "__main__":
    main()

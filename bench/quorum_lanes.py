"""What replication costs: quorum lanes beside classic priority queues on a three-node cluster.

Usage: .venv/bin/python bench/quorum_lanes.py [--jobs 20000] [--rounds 3] [--json FILE]

Starts three RabbitMQ nodes of its own (``deploy/local/cluster.sh`` on a free block of ports,
stopped and deleted at the end), then runs the no-op job of ``bench/worker_runs.py`` through
one worker process connected to node 1, in interleaved rounds: the raw aio-pika consumer on a
classic queue and on a quorum queue replicated on the three nodes, and ``taskctl worker email``
with the email group declared as a classic priority queue (the default) and as quorum lanes.
Each system has a vhost of its own, so the two topologies never meet.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from worker_runs import RAW_SYSTEMS, SAME_LOOP, TASKQ, Result, Scratch, as_json, load, summary

from tests.localcluster import running_cluster

QUORUM_TOPOLOGY = """\
groups:
  email:
    jobs: ["email", "email.#"]
    prefetch: 64
    concurrency: 32
    priority: {strategy: lanes, queue_type: quorum}
"""

RAW = next(s for s in RAW_SYSTEMS if s.name == SAME_LOOP)
RAW_QUORUM = replace(
    RAW,
    name="aio-pika-uvloop-quorum",
    label="raw aio-pika consumer, uvloop, prefetch 64, ack each message, quorum queue (3 replicas)",
    settings=(("BENCH_QUEUE_TYPE", "quorum"),),
)
TASKQ_QUORUM = replace(
    TASKQ,
    name="taskq-quorum",
    label="taskq `taskctl worker email`, quorum lanes (3 replicas)",
    queue="taskq.email.medium",  # submitted jobs take the default priority's lane
    also_empty=(*(f"taskq.email.{lane}" for lane in ("urgent", "high", "low")), "taskq.email.dlq"),
)
RAW = replace(RAW, label=RAW.label + ", classic queue")
TASKQ_CLASSIC = replace(TASKQ, label="taskq `taskctl worker email`, classic priority queue")
SYSTEMS = (RAW, RAW_QUORUM, TASKQ_CLASSIC, TASKQ_QUORUM)


def main() -> None:
    """Start the cluster, run every system in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    opts = parser.parse_args()
    results: dict[str, list[Result]] = {s.name: [] for s in SYSTEMS}
    work = Path(tempfile.mkdtemp(prefix="taskq-quorum-bench-"))
    topology = work / "quorum.yaml"
    topology.write_text(QUORUM_TOPOLOGY)
    with running_cluster(3) as cluster, ExitStack() as stack:
        # Scratch reads the broker from the settings: every process here talks to node 1.
        os.environ["TASKQ_AMQP_URL"] = cluster.amqp_url(1)
        os.environ["TASKQ_MANAGEMENT_URL"] = cluster.management_url(1)
        scratches = {
            s.name: stack.enter_context(
                Scratch(settings={"TASKQ_TOPOLOGY": str(topology)} if s is TASKQ_QUORUM else {})
            )
            for s in SYSTEMS
        }
        before = load()
        for round_no in range(opts.rounds):
            order = SYSTEMS if round_no % 2 == 0 else SYSTEMS[::-1]
            for system in order:
                result = scratches[system.name].run(system, opts.jobs)
                results[system.name].append(result)
                print(
                    f"round {round_no + 1}: {system.name:24} {result.rate:8.0f} jobs/s "
                    f"{result.cpu_us:6.0f} CPU µs/job",
                    flush=True,
                )
        after = load()
    report(results, opts.jobs, opts.rounds, before, after)
    if opts.json:
        data = as_json(SYSTEMS, results, opts.jobs, opts.rounds, before, after)
        opts.json.write_text(json.dumps(data, indent=2))


def report(
    results: dict[str, list[Result]], jobs: int, rounds: int, before: str, after: str
) -> None:
    """Print each system's rate and CPU per job, and what the quorum queue costs each consumer."""
    rate = {name: summary([r.rate for r in runs]) for name, runs in results.items()}
    cpu = {name: summary([r.cpu_us for r in runs]) for name, runs in results.items()}
    print(f"\n{jobs} jobs, {rounds} interleaved rounds; before: {before}; after: {after}\n")
    print(
        "| one worker process on node 1 | jobs/s, median (min-max) | CPU µs/job, median (min-max) |"
    )
    print("|---|---|---|")
    for system in SYSTEMS:
        (r, r_lo, r_hi), (c, c_lo, c_hi) = rate[system.name], cpu[system.name]
        print(
            f"| {system.label} | {r:,.0f} ({r_lo:,.0f}-{r_hi:,.0f}) | {c:,.0f} ({c_lo:,.0f}-{c_hi:,.0f}) |"
        )
    for classic, quorum in ((RAW, RAW_QUORUM), (TASKQ_CLASSIC, TASKQ_QUORUM)):
        print(
            f"{quorum.name} ÷ {classic.name}, jobs/s: {rate[quorum.name][0] / rate[classic.name][0]:.2f}"
        )
    print(
        f"taskq-quorum ÷ raw quorum, jobs/s: {rate['taskq-quorum'][0] / rate[RAW_QUORUM.name][0]:.2f}"
    )


if __name__ == "__main__":
    main()

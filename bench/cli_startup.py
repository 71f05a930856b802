"""How long ``taskctl --help`` and ``taskctl status ID`` take, against bare Python and bare typer.

Usage: .venv/bin/python bench/cli_startup.py [--rounds 20] [--against PATH]

Each round runs every command once, in turn (interleaved, so a burst of load on a shared
machine hits them alike), as a process of its own: wall time, and CPU time (user + system)
from the children's resource usage. ``status`` reads a job from a SQLite store made in a
temporary folder. ``--against PATH`` adds the same two commands run from another checkout
(``PYTHONPATH=PATH``), e.g. the main branch, measured in the same rounds.

Prints the median (min-max) of each, and each command's wall and CPU ratio to bare typer, the
floor of any typer command line; on a busy machine the CPU ratio is the steadier.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from jobstore.model import JobRecord, JobStatus, NewJob, open_store
from topology.envelope import new_job_id
from topology.names import Priority

TASKCTL = "from taskctl.cli import main; main()"


async def one_job(url: str) -> str:
    """Store one queued job at ``url`` and return its id."""
    store = open_store(url)
    await store.migrate()
    now = datetime.now(UTC)
    job_id = new_job_id()
    try:
        record = JobRecord(job_id, "email", JobStatus.QUEUED, Priority.MEDIUM, now, now)
        await store.create_jobs([NewJob(record)])
    finally:
        await store.close()
    return job_id


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Run ``argv`` in ``cwd``; return its wall and CPU (user + system) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout to measure alongside")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="taskq-cli-bench-")
    url = f"sqlite:///{folder}/jobs.sqlite3"
    job_id = asyncio.run(one_job(url))
    env = {**os.environ, "TASKQ_STORE_URL": url}
    python = sys.executable
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([python, "-c", "pass"], env),
        "python -c 'import typer'": ([python, "-c", "import typer"], env),
        "taskctl --help": ([python, "-c", TASKCTL, "--help"], env),
        "taskctl status ID": ([python, "-c", TASKCTL, "status", job_id], env),
    }
    if args.against is not None:
        other = {**env, "PYTHONPATH": str(args.against)}
        cases[f"taskctl --help ({args.against})"] = ([python, "-c", TASKCTL, "--help"], other)
        cases[f"taskctl status ID ({args.against})"] = (
            [python, "-c", TASKCTL, "status", job_id],
            other,
        )
    # Run in the store's folder: `python -c` puts the working directory first on the path,
    # which would hide --against behind the checkout the bench was started from.
    for argv, case_env in cases.values():  # warm the bytecode caches and the page cache
        timed(argv, case_env, folder)
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (argv, case_env) in cases.items():
            wall, cpu = timed(argv, case_env, folder)
            walls[name].append(wall * 1000)
            cpus[name].append(cpu * 1000)
    floor = statistics.median(walls["python -c 'import typer'"])
    cpu_floor = statistics.median(cpus["python -c 'import typer'"])
    print(f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f}")
    print(
        f"{'command':<48} {'wall ms, median (min-max)':>28} {'/ typer':>8} {'CPU ms':>8} {'/ typer':>8}"
    )
    for name in cases:
        wall = statistics.median(walls[name])
        spread = f"{wall:.0f} ({min(walls[name]):.0f}-{max(walls[name]):.0f})"
        cpu = statistics.median(cpus[name])
        print(f"{name:<48} {spread:>28} {wall / floor:>8.2f} {cpu:>8.0f} {cpu / cpu_floor:>8.2f}")


if __name__ == "__main__":
    main()

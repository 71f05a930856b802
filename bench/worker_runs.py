"""One system's worker process over the no-op job, in a scratch vhost: what peers.py and latency.py share.

Each worker is its own process, started by the system's own command line with the environment
the ``noop`` modules read (``BENCH_*``; ``TASKQ_*`` for taskq). Its no-op job writes the clock
and CPU time of the 1st and N-th call to a file (``noop/record.py``); the bench reads it, stops
the worker with SIGTERM, and checks that the queue is empty once the worker is gone (a message
left unacked would be back in it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import pika
from pika.adapters.blocking_connection import BlockingChannel

from tests.broker import TestsManagementClient
from topology.settings import load_settings

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the console scripts of the venv running the bench
PYTHON = sys.executable


@dataclass(frozen=True, slots=True)
class System:
    """A system under test: how to start its worker, how to enqueue jobs for it, its queues."""

    name: str
    label: str
    worker: tuple[str, ...]
    enqueue: tuple[str, ...] = ()
    queue: str = ""  # where its jobs wait; checked empty after each run
    also_empty: tuple[str, ...] = ()  # e.g. a dead-letter queue that must have stayed empty
    taskq: bool = False  # gets TASKQ_* settings and a job store of its own per run
    settings: tuple[tuple[str, str], ...] = ()  # more environment for its worker and producer
    verify: tuple[str, ...] = ()  # run after the worker stopped; fails if a job went wrong


@dataclass(frozen=True, slots=True)
class Result:
    """What one run's no-op job recorded."""

    rate: float  # jobs/s from the 1st to the N-th completion
    cpu_us: float  # the worker process's CPU µs per job over the same span
    longest_pause_ms: float  # the longest time between two consecutive jobs starting
    peak_rss_mb: float = 0.0  # the worker process's peak resident memory (0: not known here)
    latency_ns: list[int] = field(default_factory=list)


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Return median, min and max."""
    return statistics.median(values), min(values), max(values)


def load() -> str:
    """Return the machine's load averages and core count, to print next to the figures."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


class Scratch:
    """A vhost of its own with taskq's topology applied and a temporary folder; both removed on exit."""

    def __init__(
        self,
        profile: Path | None = None,
        *,
        policy: Mapping[str, object] = {},
        settings: Mapping[str, str] = {},
    ) -> None:
        # With a folder, py-spy samples each taskq worker into it (collapsed stacks, one file a run).
        self.profile = profile
        self.policy = dict(policy)
        self.extra = dict(settings)  # TASKQ_* settings of every process here (e.g. a topology file)
        self.base = load_settings().broker
        self.vhost = f"taskq-bench-{uuid.uuid4().hex[:8]}"
        self.settings = self.base.with_vhost(self.vhost)
        self.url = self.settings.amqp_url.get_secret_value()
        self.work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))

    def __enter__(self) -> Self:
        asyncio.run(self._management("create"))
        try:
            # The way an operator declares it; the worker then finds every queue it needs.
            subprocess.run(
                [str(BIN / "taskctl"), "topology", "apply"],
                env=self._env({"TASKQ_AMQP_URL": self.url}),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run(self._management("delete"))
        shutil.rmtree(self.work, ignore_errors=True)

    async def _management(self, action: str) -> None:
        async with TestsManagementClient(self.base) as management:
            if action == "create":
                await management.create_vhost(self.vhost)
                if self.policy:  # what an operator sets for a deep backlog (lazy, queue version 2)
                    policy = {"pattern": ".*", "apply-to": "queues", "definition": self.policy}
                    await management._request(
                        "PUT", f"/api/policies/{self.vhost}/bench-queues", json=policy
                    )
            else:
                await management.delete_vhost(self.vhost)

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, **self.extra, **extra}

    def env(self, system: System, jobs: int, folder: Path) -> dict[str, str]:
        """Return the environment of ``system``'s worker and producer for one run in ``folder``."""
        extra = {"BENCH_AMQP_URL": self.url, "BENCH_JOBS": str(jobs)}
        if system.queue:
            extra["BENCH_QUEUE"] = system.queue
        if system.taskq:
            extra |= {
                "TASKQ_AMQP_URL": self.url,
                "TASKQ_STORE_URL": f"sqlite:///{folder}/jobs.sqlite3",
                "TASKQ_BLOB_URL": f"file:{folder}/blobs",
                "TASKQ_HANDLERS": "noop.taskq_jobs",
            }
        return self._env(extra | dict(system.settings))

    def run(
        self,
        system: System,
        jobs: int,
        produce: Callable[[Mapping[str, str]], None] | None = None,
        timeout: float = 600,
    ) -> Result:
        """Run ``system``'s worker over ``jobs`` jobs and return what its job recorded.

        Without ``produce`` the jobs are enqueued (by the system's own producer) before the
        worker starts; with it, the worker starts first and ``produce`` sends the jobs once the
        worker consumes.
        """
        folder = Path(tempfile.mkdtemp(prefix=f"{system.name}-", dir=self.work))
        env = self.env(system, jobs, folder)
        if produce is None:
            subprocess.run(system.enqueue, env=env, check=True, cwd=BENCH)
        result = folder / "result.json"
        log = folder / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                system.worker,
                env={**env, "BENCH_RESULT": str(result)},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=BENCH,
            )
            sampler = self._sample(system, worker.pid, folder.name)
            try:
                if produce is not None:
                    self._wait_for_consumer(system.queue, worker, log)
                    produce(env)
                data = _wait_for_result(result, worker, log, time.monotonic() + timeout)
                peak = _peak_rss_mb(worker.pid)
            finally:
                code = _stop(worker)
                if sampler is not None:
                    sampler.wait(timeout=60)
        if code != 0:
            raise RuntimeError(
                f"{system.name}: worker exited with {code} on SIGTERM:\n{_tail(log)}"
            )
        for queue in (system.queue, *system.also_empty):
            left = self.messages(queue)
            if left:
                raise RuntimeError(f"{system.name}: {left} messages left in {queue} (not acked)")
        if system.verify:
            subprocess.run(system.verify, env=env, check=True, cwd=BENCH)
        (first_clock, first_cpu), (last_clock, last_cpu) = data["first"], data["last"]
        return Result(
            rate=(jobs - 1) / (last_clock - first_clock),
            cpu_us=(last_cpu - first_cpu) / (jobs - 1) * 1e6,
            longest_pause_ms=data["longest_pause_ns"] / 1e6,
            peak_rss_mb=peak,
            latency_ns=data["latency_ns"],
        )

    def _sample(self, system: System, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """Start py-spy on the worker ``pid`` when profiling; it stops when the worker exits."""
        if self.profile is None or not system.taskq:
            return None
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{name}.txt"
        command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
        return subprocess.Popen(
            [*command, "--rate", "250", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def declare(self, queue: str) -> None:
        """Declare a plain durable queue (the raw consumers' own declaration)."""
        with _channel(self.url) as channel:
            channel.queue_declare(queue, durable=True)

    def messages(self, queue: str) -> int:
        """Return how many messages wait in ``queue``."""
        with _channel(self.url) as channel:
            return int(channel.queue_declare(queue, passive=True).method.message_count)

    def _wait_for_consumer(self, queue: str, worker: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + 60
        while True:
            with _channel(self.url) as channel:
                if channel.queue_declare(queue, passive=True).method.consumer_count:
                    return
            _check_alive(worker, log, deadline, "consuming")
            time.sleep(0.05)


@contextmanager
def _channel(url: str) -> Iterator[BlockingChannel]:
    """Yield a blocking channel on a connection of its own (a long-idle one would miss heartbeats)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def _wait_for_result(
    result: Path, worker: subprocess.Popen[bytes], log: Path, deadline: float
) -> dict[str, Any]:
    # The bench only polls a file while the worker runs: it costs the worker nothing.
    while not result.exists():
        _check_alive(worker, log, deadline, "done")
        time.sleep(0.05)
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def _check_alive(worker: subprocess.Popen[bytes], log: Path, deadline: float, what: str) -> None:
    if worker.poll() is not None:
        raise RuntimeError(f"worker exited with {worker.returncode}:\n{_tail(log)}")
    if time.monotonic() > deadline:
        raise TimeoutError(f"worker not {what} in time:\n{_tail(log)}")


def _stop(worker: subprocess.Popen[bytes]) -> int:
    """Stop the worker as an operator would (SIGTERM drains it); return its exit code."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        raise


def _peak_rss_mb(pid: int) -> float:
    """Return the process's peak resident memory in MB from Linux's /proc (0 where there is none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _raw(name: str, label: str, client: str, loop: str) -> System:
    """Return a raw consumer of ``noop/raw_jobs.py`` on ``client`` and ``loop``."""
    raw = (PYTHON, "-m", "noop.raw_jobs")
    consume = (*raw, "consume", "--client", client, "--loop", loop)
    return System(name, label, consume, (*raw, "enqueue"), queue=f"bench.{name}")


RAW_SYSTEMS = (
    _raw(
        "aio-pika",
        "raw aio-pika consumer, asyncio loop, prefetch 64, ack each message",
        "aio-pika",
        "asyncio",
    ),
    _raw(
        "aio-pika-uvloop",
        "raw aio-pika consumer, uvloop, prefetch 64, ack each message",
        "aio-pika",
        "uvloop",
    ),
    _raw(
        "aiormq",
        "raw aiormq consumer, uvloop, ack every 32 with `multiple` (reference)",
        "aiormq",
        "uvloop",
    ),
)
TASKQ = System(
    "taskq",
    "taskq `taskctl worker email`, every feature on",
    (str(BIN / "taskctl"), "worker", "email"),
    (PYTHON, "-m", "noop.taskq_jobs"),
    queue="taskq.email",
    also_empty=("taskq.email.dlq",),
    taskq=True,
    verify=(PYTHON, "-m", "noop.taskq_jobs", "verify"),
)
# The same worker with payloads and results sealed at rest (one fixed throwaway key).
TASKQ_SEALED = replace(
    TASKQ,
    name="taskq-sealed",
    label="taskq `taskctl worker email`, every feature on, payloads and results sealed",
    settings=(("TASKQ_DATA_KEYS", "bench:" + base64.b64encode(bytes(range(32))).decode()),),
)
SAME_LOOP = "aio-pika-uvloop"  # taskctl worker runs on uvloop


def compare(systems: Sequence[System], peers: Sequence[str], doc: str | None) -> None:
    """Parse the command line, run the chosen systems in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", help="comma-separated systems to run: " + ", ".join(s.name for s in systems)
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--lazy", action="store_true", help="a policy making every queue lazy (kept on disk)"
    )
    parser.add_argument(
        "--queue-version",
        type=int,
        choices=(1, 2),
        help="a policy giving every classic queue this storage version (2: RabbitMQ 3.10+)",
    )
    parser.add_argument(
        "--profile", type=Path, help="sample taskq's worker with py-spy into this folder"
    )
    opts = parser.parse_args()
    chosen = [s for s in systems if not opts.only or s.name in opts.only.split(",")]
    if not chosen or opts.jobs < 2:
        parser.error("nothing to run: check --only and --jobs (at least 2)")
    before = load()
    results: dict[str, list[Result]] = {s.name: [] for s in chosen}
    policy: dict[str, object] = {"queue-mode": "lazy"} if opts.lazy else {}
    if opts.queue_version:
        policy["queue-version"] = opts.queue_version
    with Scratch(opts.profile, policy=policy) as scratch:
        for round_no in range(opts.rounds):
            # Interleaved, every other round reversed: drift on a shared machine hits all alike.
            order = chosen if round_no % 2 == 0 else chosen[::-1]
            for system in order:
                result = scratch.run(system, opts.jobs)
                results[system.name].append(result)
                print(
                    f"round {round_no + 1}: {system.name:16} {result.rate:8.0f} jobs/s "
                    f"{result.cpu_us:6.0f} CPU µs/job, longest pause {result.longest_pause_ms:.0f} ms, "
                    f"peak RSS {result.peak_rss_mb:.0f} MB",
                    flush=True,
                )
    after = load()
    report(chosen, results, peers, opts.jobs, opts.rounds, before, after)
    if opts.json:
        data = as_json(chosen, results, opts.jobs, opts.rounds, before, after)
        opts.json.write_text(json.dumps(data, indent=2))


def report(
    chosen: Sequence[System],
    results: dict[str, list[Result]],
    peers: Sequence[str],
    jobs: int,
    rounds: int,
    before: str,
    after: str,
) -> None:
    """Print the table of rates and CPU per job, and taskq's ratios to the best peer and to raw."""
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
    ran = [name for name in peers if name in rate]
    if ran:
        best = max(ran, key=lambda name: rate[name][0])
        print(
            f"\ntaskq vs the best of {'/'.join(ran)} ({best}), jobs/s: "
            f"{rate['taskq'][0] / rate[best][0]:.2f}x (target ≥ 1.2)"
        )
    if SAME_LOOP in rate:
        print(
            f"taskq vs raw aio-pika on uvloop, jobs/s: {rate['taskq'][0] / rate[SAME_LOOP][0]:.2f}x "
            "(stretch ≥ 1.0)"
        )


def as_json(
    chosen: Sequence[System],
    results: dict[str, list[Result]],
    jobs: int,
    rounds: int,
    before: str,
    after: str,
) -> dict[str, object]:
    """Return the results as one JSON document."""
    return {
        "jobs": jobs,
        "rounds": rounds,
        "load_before": before,
        "load_after": after,
        "systems": {
            s.name: {
                "label": s.label,
                "jobs_per_s": [r.rate for r in results[s.name]],
                "cpu_us_per_job": [r.cpu_us for r in results[s.name]],
                "longest_pause_ms": [r.longest_pause_ms for r in results[s.name]],
                "peak_rss_mb": [r.peak_rss_mb for r in results[s.name]],
            }
            for s in chosen
        },
    }

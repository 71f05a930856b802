"""One system's worker process over the no-op job, in a scratch vhost: what peers.py and latency.py share.

Each worker is its own process, started by the system's own command line with the environment
the ``noop`` modules read (``BENCH_*``; ``TASKQ_*`` for taskq). Its no-op job writes the clock
and CPU time of the 1st and N-th call to a file (``noop/record.py``); the bench reads it, stops
the worker with SIGTERM, and checks that the queue is empty once the worker is gone (a message
left unacked would be back in it).
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pika
from pika.adapters.blocking_connection import BlockingChannel

from topology.management import ManagementClient
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
    verify: tuple[str, ...] = ()  # run after the worker stopped; fails if a job went wrong


@dataclass(frozen=True, slots=True)
class Result:
    """What one run's no-op job recorded."""

    rate: float  # jobs/s from the 1st to the N-th completion
    cpu_us: float  # the worker process's CPU µs per job over the same span
    longest_pause_ms: float  # the longest time between two consecutive jobs starting
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

    def __init__(self) -> None:
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
        async with ManagementClient(self.base) as management:
            if action == "create":
                await management.create_vhost(self.vhost)
            else:
                await management.delete_vhost(self.vhost)

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, **extra}

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
        return self._env(extra)

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
            try:
                if produce is not None:
                    self._wait_for_consumer(system.queue, worker, log)
                    produce(env)
                data = _wait_for_result(result, worker, log, time.monotonic() + timeout)
            finally:
                code = _stop(worker)
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
            latency_ns=data["latency_ns"],
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


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

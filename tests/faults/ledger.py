"""The ledger: jobs submitted over HTTP while a fault strikes, and what became of each acknowledged one.

``JOBS`` jobs go to ``POST /jobs`` one at a time, each under an idempotency key of its own and
retried under that key until the API acknowledges it (a refusal while the broker is away is
not an acknowledgement). The handler (tests/consumers/soak_handlers.py) appends each run's
start and effect to a sink, so what really ran is counted apart from what the job store says.
A fault strikes a third of the way in; afterwards every acknowledged job is classified: ran
once, ran more than once, never ran (the store says it ended without running), still pending.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from jobstore.model import open_store
from tests.helpers import wait_healthy, write_topology
from tests.security.conftest import free_port

JOBS = int(os.environ.get("TASKQ_TEST_LEDGER_JOBS", "300"))
HEARTBEAT = 2  # seconds: a silent peer is given up after three of them
SETTLE_S = float(
    os.environ.get("TASKQ_TEST_LEDGER_SETTLE", "90")
)  # the most a ledger waits for its jobs

# A short timeout keeps a killed worker's leases (1.5 x timeout + 2 s) short.
TOPOLOGY = """
delays: {{resolution: 250ms, longest: 1m}}
groups:
  soak:
    jobs: ["soak.#"]
    prefetch: 16
    concurrency: 8
    timeout: 2s
    retry: {{max_attempts: 10, base: 250ms, factor: 2, max: 2s, jitter: none}}
    priority: {{strategy: {strategy}, queue_type: {queue_type}}}
"""
CLASSIC = TOPOLOGY.format(strategy="queue", queue_type="classic")
QUORUM = TOPOLOGY.format(strategy="lanes", queue_type="quorum")
REPEAT_WINDOW_NS = 500_000_000  # an effect this long before its worker's kill may be repeated
PENDING = {"scheduled", "queued", "running", "retrying"}


@dataclass
class Stack:
    """An API process and one worker process (replaced when killed) sharing a store and a sink."""

    base: str
    key: str
    worker_env: dict[str, str]
    sink: Path
    logs: Path
    worker: subprocess.Popen[bytes] | None = None
    exits: list[int | None] = field(default_factory=list)  # the exit codes of replaced workers
    kills: dict[int, int] = field(default_factory=dict)  # a killed worker's pid -> when, in ns

    def start_worker(self) -> None:
        """Start ``taskctl worker soak``, its output appended to the logs folder."""
        with (self.logs / "worker.log").open("ab") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "taskctl", "worker", "soak"],
                env=self.worker_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill_worker(self) -> None:
        """SIGKILL the worker and start its replacement at once, as ``taskctl up`` would."""
        assert self.worker is not None
        self.worker.kill()
        self.kills[self.worker.pid] = time.time_ns()
        self.exits.append(self.worker.wait())
        self.start_worker()

    def worker_alive(self) -> bool:
        """Return whether the current worker still runs."""
        return self.worker is not None and self.worker.poll() is None


def _environment(tmp_path: Path, amqp_url: str, topology: str) -> dict[str, str]:
    return {
        **os.environ,
        "TASKQ_AMQP_URL": amqp_url,
        "TASKQ_TOPOLOGY": str(write_topology(tmp_path, topology)),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_HANDLERS": "tests.consumers.soak_handlers",
        "TASKQ_SOAK_SINK": str(tmp_path / "sink.log"),
        "TASKQ_HEARTBEAT": str(HEARTBEAT),
        "TASKQ_RATE_LIMIT": "0",
        "TASKQ_LOG_LEVEL": "WARNING",
    }


def _taskctl(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taskctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def running_stack(
    tmp_path: Path,
    api_url: str,
    worker_url: str | None = None,
    *,
    topology: str = CLASSIC,
    more: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Apply ``topology``, run ``taskctl serve`` on ``api_url`` and a worker on ``worker_url``; stop both after."""
    env = _environment(tmp_path, api_url, topology) | (more or {})
    _taskctl(env, "topology", "apply")
    made = _taskctl(env, "keys", "create", "ledger", "--scope", "jobs:write", "--json")
    port = free_port()
    stack = Stack(
        f"http://127.0.0.1:{port}",
        orjson.loads(made)["key"],
        env | {"TASKQ_AMQP_URL": worker_url or api_url},
        tmp_path / "sink.log",
        tmp_path,
    )
    with ExitStack() as stop, (tmp_path / "api.log").open("ab") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "taskctl", "serve"],
            env=env | {"TASKQ_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        stop.callback(_end, api)
        wait_healthy(stack.base, api, within=60)
        stack.start_worker()
        stop.callback(lambda: stack.worker and _end(stack.worker))
        yield stack


@contextmanager
def running_autoscaler(stack: Stack) -> Iterator[Callable[[], dict[str, Any]]]:
    """Run ``taskctl autoscale`` beside ``stack`` (it starts a worker of its own); yield a reader of its ``/status``."""
    env = stack.worker_env
    made = _taskctl(env, "keys", "create", "ledger-admin", "--scope", "admin", "--json")
    headers = {"Authorization": f"Bearer {orjson.loads(made)['key']}"}
    port = free_port()
    with (stack.logs / "autoscaler.log").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskctl", "autoscale", "--grace", "5"],
            env=env | {"TASKQ_AUTOSCALER_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def status() -> dict[str, Any]:
        assert process.poll() is None, "the autoscaler exited"
        answer = httpx.get(f"http://127.0.0.1:{port}/status", headers=headers, timeout=10)
        answer.raise_for_status()
        return dict(answer.json())

    try:
        deadline = time.monotonic() + 60
        while True:  # serving its status once it has decided for the group at least once
            with suppress(httpx.HTTPError):
                if status()["groups"]:
                    break
            assert time.monotonic() < deadline, "the autoscaler did not serve its status"
            time.sleep(0.2)
        yield status
    finally:
        _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Tally:
    """What became of every acknowledged job, and how long the pipeline took to run jobs again."""

    acknowledged: set[str]
    effects: dict[str, list[tuple[int, int]]]  # job -> (pid, ns) of each effect
    kills: dict[int, int]
    statuses: dict[str, str]
    refusals: int  # submissions answered with an error (or none) and retried under their key
    recovered_s: float | None  # from the fault's end to the first effect after it
    longest_pause_s: float  # the longest time without an effect, from the fault's start on

    @property
    def duplicated(self) -> dict[str, int]:
        """Return the jobs whose effect happened more than once, with how often."""
        return {j: len(e) for j, e in self.effects.items() if len(e) > 1 and j in self.acknowledged}

    @property
    def unexplained(self) -> dict[str, int]:
        """Return the repeated effects not explained by a kill between an effect and its done-mark.

        A worker killed after its handler's effect and before the store recorded the run as
        done leaves the job to run again once its claim's lease ends: at-least-once, and the
        only repeat the execution claim allows. Any other repeat is a fault of taskq's.
        """
        return {
            job: n
            for job, n in self.duplicated.items()
            if not all(
                0 <= self.kills.get(pid, -(10**19)) - ns <= REPEAT_WINDOW_NS
                for pid, ns in sorted(self.effects[job], key=lambda e: e[1])[:-1]
            )
        }

    @property
    def pending(self) -> set[str]:
        """Return the acknowledged jobs not run yet that the store still expects to run."""
        return {j for j in self.acknowledged - set(self.effects) if self.statuses.get(j) in PENDING}

    @property
    def never_ran(self) -> set[str]:
        """Return the acknowledged jobs that will never run: no effect, and ended (or unknown) in the store."""
        return self.acknowledged - set(self.effects) - self.pending

    def row(self, fault: str) -> str:
        """Return a markdown table row: fault, acknowledged, once, repeats (unexplained), lost, pending, refusals, recovery, pause."""
        once = sum(1 for j in self.acknowledged if len(self.effects.get(j, ())) == 1)
        recovered = "-" if self.recovered_s is None else f"{self.recovered_s:.2f} s"
        return (
            f"| {fault} | {len(self.acknowledged)} | {once} | {len(self.duplicated)} "
            f"({len(self.unexplained)}) | "
            f"{len(self.never_ran)} | {len(self.pending)} | {self.refusals} | {recovered} | "
            f"{self.longest_pause_s:.2f} s |"
        )


Fault = Callable[[Stack], float]
"""Strikes the stack and returns the wall-clock time from which jobs can run again."""


def run_ledger(stack: Stack, fault: Fault, jobs: int = JOBS) -> Tally:
    """Submit ``jobs`` jobs, ``fault`` striking a third of the way in; wait for them; return the tally.

    Submitting goes on while the fault lasts and for a third of ``jobs`` after it, so jobs
    arrive before, during and after it.
    """
    acknowledged: set[str] = set()
    refusals = 0
    resumed: list[float] = []
    struck: list[float] = []

    def strike() -> None:
        struck.append(time.time())
        resumed.append(fault(stack))

    striking = threading.Thread(target=strike, name="fault")
    headers = {"Authorization": f"Bearer {stack.key}"}
    tail: int | None = None  # the last job to submit, once the fault is over
    with httpx.Client(base_url=stack.base, headers=headers, timeout=30) as http:
        n = 0
        while tail is None or n <= tail:
            if n == jobs // 3:
                _wait_for_a_run(stack.sink)  # the worker consumes: strike a running pipeline
                striking.start()
            if tail is None and n >= jobs and not striking.is_alive():
                tail = n + jobs // 3
            job_id, refused = _submit(http, n)
            acknowledged.add(job_id)
            refusals += refused
            n += 1
    striking.join(timeout=120)
    assert resumed, "the fault did not finish"
    effects = _wait_for_effects(stack.sink, acknowledged)
    statuses = _statuses(stack, acknowledged - set(effects))
    recovered, pause = _recovery(stack.sink, struck[0], resumed[0])
    return Tally(acknowledged, effects, dict(stack.kills), statuses, refusals, recovered, pause)


def _submit(http: httpx.Client, n: int) -> tuple[str, int]:
    """Submit job ``n`` under its key until the API acknowledges it; return its id and the refusals met."""
    body = {
        "type": "soak.ledger",
        "payload": {"sleep": [0.001, 0.005]},
        "idempotency_key": f"ledger-{n}",
    }
    deadline = time.monotonic() + 120
    refused = 0
    while True:
        try:
            answer = http.post("/jobs", json=body)
            if answer.status_code in (200, 201, 202):
                return str(answer.json()["id"]), refused
            # 409: the key's first request is still in flight (its answer was lost); retry later.
            assert answer.status_code in (409, 502, 503, 504), answer.text
        except httpx.TransportError:
            pass
        refused += 1
        assert time.monotonic() < deadline, f"job {n} not acknowledged in 120 s"
        time.sleep(0.1)


def _read_sink(sink: Path) -> list[tuple[str, str, int, int]]:
    """Return every ``(kind, job id, pid, ns)`` of the sink."""
    if not sink.exists():
        return []
    lines = sink.read_bytes().decode().splitlines()
    return [(kind, job, int(pid), int(ns)) for kind, job, pid, ns in map(str.split, lines)]


def _effects(sink: Path) -> dict[str, list[tuple[int, int]]]:
    effects: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for kind, job, pid, ns in _read_sink(sink):
        if kind == "effect":
            effects[job].append((pid, ns))
    return effects


def _wait_for_a_run(sink: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not _effects(sink):
        assert time.monotonic() < deadline, f"no job ran within {within} s"
        time.sleep(0.05)


def _wait_for_effects(sink: Path, acknowledged: set[str]) -> dict[str, list[tuple[int, int]]]:
    deadline = time.monotonic() + SETTLE_S
    while not acknowledged <= set(_effects(sink)) and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1)  # a repeated run would show up here too
    return _effects(sink)


def _recovery(sink: Path, struck_at: float, resumed_at: float) -> tuple[float | None, float]:
    """Return the time from ``resumed_at`` to the next effect, and the longest gap between effects from ``struck_at``."""
    times = sorted(ns / 1e9 for kind, _, _, ns in _read_sink(sink) if kind == "effect")
    after = [t for t in times if t >= resumed_at]
    since = [struck_at, *(t for t in times if t >= struck_at)]
    pause = max((b - a for a, b in itertools.pairwise(since)), default=0.0)
    return (after[0] - resumed_at if after else None), pause


def _statuses(stack: Stack, ids: set[str]) -> dict[str, str]:
    """Return the store's status of each job in ``ids`` ("unknown" for a job it does not hold)."""

    async def read() -> dict[str, str]:
        store = open_store(stack.worker_env["TASKQ_STORE_URL"])
        try:
            jobs = {job_id: await store.get_job(job_id) for job_id in ids}
        finally:
            await store.close()
        return {job_id: job.status if job else "unknown" for job_id, job in jobs.items()}

    return asyncio.run(read())

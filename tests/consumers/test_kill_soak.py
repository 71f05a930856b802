"""Kill soak: SIGKILL the worker mid-job ten times over thousands of jobs; none lost, none rerun."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobstore.model import JobRecord, JobStatus
from producers.backends import Backends, confirmed, open_backends
from producers.submit import JobRequest, Submitted, Submitter
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.broker import connect
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import load_topology
from topology.settings import BrokerSettings, load_settings

pytestmark = pytest.mark.rabbitmq

# Every run of the handler (tests/consumers/soak_handlers.py) appends ``start`` when it begins
# and ``effect`` right before it returns to one append-only sink, with the worker's pid and
# the time: what really ran, counted independently of what the worker tells the job store.

JOBS = int(os.environ.get("TASKQ_SOAK_JOBS", "3000"))
KILLS = 10
CONCURRENCY = 8
SLEEP = (0.005, 0.02)  # seconds each run sleeps, drawn at random, so kills land mid-run
EFFECTS_PER_LIFE = 225  # effects a worker makes before it is killed (fewer on a small run)
# A repeated effect must precede its worker's kill by at most this much: the store writes
# between an effect and its done-mark take milliseconds, a loaded machine stretches them.
REPEAT_WINDOW_MS = 500
CHUNK = 500  # SubmitSettings.batch_max, the most one submit_many call takes

# A short timeout keeps the soak short: a killed worker's claims are leased for 1.5 x timeout
# + 2 s, and its jobs in flight wait (held, through the delay tiers) until the lease runs out.
TOPOLOGY_FILE = f"""
delays: {{resolution: 250ms, longest: 1m}}
groups:
  soak:
    jobs: ["soak.#"]
    prefetch: {2 * CONCURRENCY}
    concurrency: {CONCURRENCY}
    timeout: 2s
    retry: {{max_attempts: 3, base: 250ms, factor: 2, max: 1s, jitter: none}}
"""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One sink line: ``start`` or ``effect`` of a job, by a worker pid, at a time in ns."""

    kind: str
    job_id: str
    pid: int
    ns: int


def parse(data: bytes) -> list[Event]:
    events = []
    for line in data.decode().splitlines():
        kind, job_id, pid, ns = line.split()
        events.append(Event(kind, job_id, int(pid), int(ns)))
    return events


def read_sink(sink: Path) -> list[Event]:
    """Return every event in the sink."""
    return parse(sink.read_bytes())


class SinkWatch:
    """Follows the sink as it grows: effects made and runs in flight, per worker pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.effects: defaultdict[int, int] = defaultdict(int)
        self.running: defaultdict[int, set[str]] = defaultdict(set)

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        # Whole lines only: a read racing an append may end in the middle of a line.
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        for event in parse(whole):
            if event.kind == "start":
                self.running[event.pid].add(event.job_id)
            else:
                self.effects[event.pid] += 1
                self.running[event.pid].discard(event.job_id)


@dataclass
class Findings:
    """What the sink and the store say about the soak, violations listed with their evidence."""

    runs: int = 0
    effects: int = 0
    in_flight: dict[int, list[str]] = field(default_factory=dict)  # killed pid -> its open runs
    duplicated: dict[str, int] = field(default_factory=dict)  # job -> effects, when above one
    repeat_gaps_ms: list[float] = field(default_factory=list)  # repeated effect -> its kill
    lost: list[str] = field(default_factory=list)
    strangers: list[str] = field(default_factory=list)
    not_succeeded: list[str] = field(default_factory=list)
    no_finished_at: list[str] = field(default_factory=list)
    reruns: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


def ns_of(moment: datetime) -> int:
    """Return ``moment`` in ns since the epoch, exactly (the store keeps microseconds)."""
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def in_flight_at_kill(events: list[Event], kills: dict[int, int]) -> dict[int, list[str]]:
    """Return, per killed pid, the jobs it had started and not made the effect of."""
    open_runs: dict[int, dict[str, int]] = {pid: defaultdict(int) for pid in kills}
    for event in events:
        if event.pid in open_runs:
            open_runs[event.pid][event.job_id] += 1 if event.kind == "start" else -1
    return {pid: sorted(j for j, n in runs.items() if n > 0) for pid, runs in open_runs.items()}


def check_job(
    job_id: str, lines: list[Event], record: JobRecord, kills: dict[int, int], found: Findings
) -> None:
    """Check one job's runs against its record; add what is wrong to ``found``."""
    effects = [e for e in lines if e.kind == "effect"]
    shown = f"{job_id}: {[f'{e.kind} {e.pid} {e.ns}' for e in lines]}"
    if record.status is not JobStatus.SUCCEEDED:
        found.not_succeeded.append(f"{shown}; store says {record.status}: {record.last_error}")
    if not effects:
        found.lost.append(shown)
        return
    if len(effects) > 1:
        found.duplicated[job_id] = len(effects)
        check_repeats(shown, effects[:-1], kills, found)
    check_no_rerun(shown, lines, record, found)


def check_repeats(
    shown: str, repeated: list[Event], kills: dict[int, int], found: Findings
) -> None:
    """Check that each effect a later run repeated was cut off from its done-mark by a kill."""
    # Each came from a killed worker, just before its kill (the at-least-once window is the
    # store writes between the effect and the done-mark), and a worker dies only once.
    gaps = [(kills[e.pid] - e.ns) / 1e6 for e in repeated if e.pid in kills]
    found.repeat_gaps_ms += gaps
    explained = len(gaps) == len(repeated) and all(0 <= g <= REPEAT_WINDOW_MS for g in gaps)
    if not explained or len({e.pid for e in repeated}) < len(repeated):
        found.unexplained.append(f"{shown}; effect to kill (ms): {gaps}")


def check_no_rerun(shown: str, lines: list[Event], record: JobRecord, found: Findings) -> None:
    """Check that the job never started after its last effect, nor after the store finished it."""
    finished = record.finished_at
    if finished is None:  # every success records when it finished: a bug, reported below
        found.no_finished_at.append(shown)
        finished = record.updated_at
    last_effect = [e for e in lines if e.kind == "effect"][-1]
    limit = min(last_effect.ns, ns_of(finished))
    if any(e.kind == "start" and e.ns > limit for e in lines):
        found.reruns.append(f"{shown}; finished_at {record.finished_at}, {record.updated_at}")


def analyse(
    events: list[Event], ids: list[str], records: dict[str, JobRecord], kills: dict[int, int]
) -> Findings:
    """Read the whole sink against the submitted jobs, their final records and the kills."""
    found = Findings(
        runs=sum(e.kind == "start" for e in events),
        effects=sum(e.kind == "effect" for e in events),
        in_flight=in_flight_at_kill(events, kills),
    )
    by_job: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_job[event.job_id].append(event)
    found.strangers = sorted(set(by_job) - set(ids))
    for job_id in ids:
        check_job(job_id, by_job.get(job_id, []), records[job_id], kills, found)
    return found


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Output to a file, not a pipe nobody reads while the worker runs: a full pipe would stall it.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskctl", "worker", "soak"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail(path: Path, chars: int = 3000) -> str:
    """Return the end of a worker's log, for a failure message."""
    return path.read_text(errors="replace")[-chars:]


def sink_lines(sink: Path, job_id: str) -> list[str]:
    """Return the sink's lines about one job, for a failure message."""
    return [line for line in sink.read_text().splitlines() if job_id in line]


async def reap(worker: subprocess.Popen[bytes], *, within: float = 30) -> int:
    try:
        return await asyncio.to_thread(worker.wait, within)
    except subprocess.TimeoutExpired:
        worker.kill()
        return await asyncio.to_thread(worker.wait)


@pytest.fixture
async def soak_topology(vhost: BrokerSettings, tmp_path: Path) -> CompiledTopology:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY_FILE)
    compiled = compile_topology(load_topology(path))
    await apply_topology(compiled, vhost)
    return compiled


@pytest.fixture
def env(vhost: BrokerSettings, soak_topology: CompiledTopology, tmp_path: Path) -> dict[str, str]:
    return {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_HANDLERS": "tests.consumers.soak_handlers",
        "TASKQ_GRACE": "10",
        "TASKQ_SOAK_SINK": str(tmp_path / "sink.txt"),
    }


@pytest.fixture
async def backends(env: dict[str, str]) -> AsyncIterator[Backends]:
    opened = await open_backends(load_settings(env))
    try:
        yield opened
    finally:
        await opened.close()


async def submit_jobs(backends: Backends, count: int) -> list[str]:
    publisher = await confirmed("test")(backends)
    try:
        submitter = Submitter(
            backends.topology, publisher, backends.store, backends.blobs, backends.settings.submit
        )
        ids: list[str] = []
        for first in range(0, count, CHUNK):
            requests = [
                JobRequest(type="soak.work", payload={"sleep": list(SLEEP)})
                for _ in range(first, min(first + CHUNK, count))
            ]
            for outcome in await submitter.submit_many(requests):
                assert isinstance(outcome, Submitted), outcome
                ids.append(outcome.job_id)
        return ids
    finally:
        await publisher.close()


async def run_and_kill(
    env: dict[str, str], watch: SinkWatch, log: Path, effects: int
) -> tuple[int, int]:
    """Start a worker, SIGKILL it after ``effects`` effects with runs in flight; return (pid, kill ns)."""
    worker = start_worker(env, log)

    async def busy() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"worker {worker.pid} exited {worker.returncode}: {tail(log)}")
        watch.poll()
        # Two runs in flight, not one: the kill lands a moment after this look, and each run
        # sleeps at least SLEEP[0], so one of them is still in its handler then.
        return watch.effects[worker.pid] >= effects and len(watch.running[worker.pid]) >= 2

    try:
        await eventually(busy, within=60, every=0.01)
        worker.kill()
        killed_at = time.time_ns()
    except TimeoutError:
        raise AssertionError(
            f"worker {worker.pid} made {watch.effects[worker.pid]} effects in 60 s, not "
            f"{effects}: {tail(log)}"
        ) from None
    finally:
        if worker.poll() is None:
            worker.kill()
        code = await reap(worker)
    assert code == -signal.SIGKILL, code
    return worker.pid, killed_at


async def wait_until_all_done(
    backends: Backends, settings: BrokerSettings, ids: list[str], sink: Path
) -> None:
    """Wait until every job succeeded and no copy of one is left on the broker."""
    pending = set(ids)
    connection = await connect(settings, name="kill soak probe")
    try:
        channel = await connection.channel()

        async def done() -> bool:
            for job_id in sorted(pending):
                job = await backends.store.get_job(job_id)
                assert job is not None, job_id
                if job.status is JobStatus.SUCCEEDED:
                    pending.discard(job_id)
                elif job.status.terminal:
                    raise AssertionError(f"job {job_id} ended {job}; {sink_lines(sink, job_id)}")
            if pending:
                return False
            # Stale copies (a held job parked in a delay tier) must reach the worker too, so
            # a finished job they would wrongly rerun shows in the sink.
            for queue in backends.topology.queues:
                declared = await channel.declare_queue(queue.name, passive=True)
                if declared.declaration_result.message_count:
                    return False
            return True

        try:
            await eventually(done, within=60, every=0.25)
        except TimeoutError:
            states = {i: (await backends.store.get_job(i)) for i in sorted(pending)[:10]}
            raise AssertionError(
                f"{len(pending)} jobs unfinished after 60 s, e.g. {states}"
            ) from None
    finally:
        await connection.close()


def figures(found: Findings, jobs: int, kills: int, elapsed: float) -> str:
    gap = max(found.repeat_gaps_ms, default=0)
    return (
        f"jobs {jobs}, kills {kills}, runs {found.runs}, effects {found.effects}, "
        f"duplicate effects {found.effects - jobs} over {len(found.duplicated)} jobs "
        f"(effect to kill at most {gap:.1f} ms), "
        f"in flight at each kill {[len(v) for v in found.in_flight.values()]}, "
        f"succeeded without finished_at {len(found.no_finished_at)}, "
        f"elapsed {elapsed:.1f} s"
    )


async def test_ten_sigkills_mid_job_lose_no_job_and_never_rerun_a_finished_one(
    env: dict[str, str], backends: Backends, vhost: BrokerSettings, tmp_path: Path
):
    began = time.monotonic()
    ids = await submit_jobs(backends, JOBS)
    sink = Path(env["TASKQ_SOAK_SINK"])
    watch = SinkWatch(sink)
    # Leave the last worker a good share, so every kill finds a backlog to be busy with.
    per_life = max(1, min(EFFECTS_PER_LIFE, JOBS // (KILLS + 3)))
    killed = [
        await run_and_kill(env, watch, tmp_path / f"worker-{n}.log", per_life) for n in range(KILLS)
    ]
    kills = dict(killed)
    final_log = tmp_path / "worker-final.log"
    final = start_worker(env, final_log)
    try:
        await wait_until_all_done(backends, vhost, ids, sink)
    finally:
        final.send_signal(signal.SIGTERM)
        code = await reap(final)
    elapsed = time.monotonic() - began
    assert code == 0, tail(final_log)

    records = {}
    for job_id in ids:
        record = await backends.store.get_job(job_id)
        assert record is not None, job_id
        records[job_id] = record
    found = analyse(read_sink(sink), ids, records, kills)
    summary = figures(found, len(ids), len(killed), elapsed)
    print(f"\nkill soak: {summary}")

    # Pids tell the workers apart in the sink, so none may have been reused.
    assert len(kills) == KILLS, killed
    assert final.pid not in kills, (killed, final.pid)
    assert all(found.in_flight.values()), f"a kill found no run in flight: {found.in_flight}"
    assert found.lost == [], f"{len(found.lost)} jobs lost; {summary}"
    assert found.strangers == [], found.strangers
    assert found.not_succeeded == [], f"{len(found.not_succeeded)} not succeeded; {summary}"
    assert found.reruns == [], f"{len(found.reruns)} finished jobs ran again; {summary}"
    assert found.unexplained == [], f"effects repeated without a kill; {summary}"
    assert found.no_finished_at == [], f"succeeded without finished_at; {summary}"
    assert len(found.duplicated) <= KILLS * CONCURRENCY, summary

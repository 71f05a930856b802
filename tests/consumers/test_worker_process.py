"""The worker as a process and under broker faults: SIGTERM drains, dropped links recover."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.handlers import JobContext
from jobstore.model import JobStatus
from producers.backends import confirmed, open_backends, open_producer
from producers.submit import JobRequest
from tests.consumers.rig import TOPOLOGY, Rig
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq

TOPOLOGY_FILE = """
delays: {resolution: 250ms, longest: 1m}
groups:
  mail:
    jobs: ["mail.#"]
    timeout: 5s
    retry: {max_attempts: 3, base: 250ms, factor: 2, max: 1s, jitter: none}
"""


@pytest.fixture
async def env(vhost, tmp_path: Path) -> dict[str, str]:
    await apply_topology(TOPOLOGY, vhost)
    (tmp_path / "topology.yaml").write_text(TOPOLOGY_FILE)
    return {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_HANDLERS": "tests.consumers.process_handlers",
        "TASKQ_GRACE": "10",
        "TASKQ_TEST_SINK": str(tmp_path / "sink.txt"),
    }


async def submit_all(env: dict[str, str], requests: list[JobRequest]) -> list[str]:
    producer = await open_producer(load_settings(env), confirmed("test"))
    try:
        return [(await producer.submitter.submit(r)).job_id for r in requests]
    finally:
        await producer.close()


async def statuses(env: dict[str, str], ids: list[str]) -> list[JobStatus]:
    backends = await open_backends(load_settings(env))
    try:
        return [(await backends.store.get_job(i)).status for i in ids]  # type: ignore[union-attr]
    finally:
        await backends.close()


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskctl", "worker", "mail"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_sigterm_lets_jobs_in_flight_finish_then_exits_0(env: dict[str, str], tmp_path: Path):
    ids = await submit_all(
        env, [JobRequest(type="mail.slow", payload={"sleep": 1.5}) for _ in range(4)]
    )
    worker = start_worker(env)
    try:

        async def all_running() -> bool:
            return all(s is JobStatus.RUNNING for s in await statuses(env, ids))

        await eventually(all_running, within=30)
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(worker.communicate, timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert await statuses(env, ids) == [JobStatus.SUCCEEDED] * 4
    assert sorted((tmp_path / "sink.txt").read_text().split()) == sorted(ids)


async def test_worker_recovers_when_the_broker_drops_every_connection(rig: Rig):
    @rig.registry.handler("mail.#")
    async def note(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)

    first = await rig.submit("mail.one")
    await rig.until(first, JobStatus.SUCCEEDED)
    done = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "close_all_connections",
        "--vhost",
        rig.settings.vhost,
        "test: drop every link",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await done.wait() == 0

    # The robust connections come back with the consumer restored; a new job runs.
    async def submitted() -> bool:
        try:
            rig.runs.append("submitted:" + await rig.submit("mail.two"))
            return True
        except Exception:
            return False

    await eventually(submitted, within=30, every=0.5)
    second = rig.runs[-1].removeprefix("submitted:")
    try:
        await rig.until(second, JobStatus.SUCCEEDED, within=30)
    except TimeoutError:
        raise AssertionError(f"status {await rig.status(second)}; runs {rig.runs}") from None
    assert rig.runs.count(second) == 1


async def test_sigkill_mid_run_loses_no_job_and_never_reruns_a_finished_one(
    env: dict[str, str], tmp_path: Path
):
    ids = await submit_all(
        env, [JobRequest(type="mail.work", payload={"sleep": 0.05}) for _ in range(150)]
    )
    kills = 3
    for _ in range(kills):
        worker = start_worker(env)
        await asyncio.sleep(1.5)  # let it take and finish some jobs, then kill it mid-run
        worker.kill()
        await asyncio.to_thread(worker.communicate)  # reap it and close its pipe
    worker = start_worker(env)
    try:

        async def all_done() -> bool:
            return all(s is JobStatus.SUCCEEDED for s in await statuses(env, ids))

        await eventually(all_done, within=80, every=0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.communicate, timeout=30)
    effects = (tmp_path / "sink.txt").read_text().split()
    assert set(effects) == set(ids)  # nothing lost
    duplicates = len(effects) - len(set(effects))
    # Only a job killed between its effect and its done-mark can run twice: at most the jobs
    # in flight at each kill (the group's concurrency, 8). A finished job never reruns.
    assert duplicates <= kills * 8, duplicates

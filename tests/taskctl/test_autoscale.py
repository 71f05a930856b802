"""The autoscaler on the real broker with local worker processes: up to max, drain, back to min."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.signals import SignalReader
from jobstore.model import JobSearch, JobStatus
from producers.backends import confirmed, open_producer
from producers.submit import JobRequest
from taskctl.supervisor import LocalScaler, Supervisor, scaled_spec
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq

JOBS = int(os.environ.get("TASKQ_AUTOSCALE_JOBS", "3000"))
TOPOLOGY = """
delays: {resolution: 250ms, longest: 1m}
groups:
  mail:
    jobs: ["mail.#"]
    prefetch: 10
    concurrency: 5
    timeout: 10s
    scale: {min: 1, max: 4, backlog_per_worker: 200, stabilization: 4s}
"""


class Recording:
    """Wraps the local scaler, remembering when each scale action happened."""

    def __init__(self, inner: LocalScaler) -> None:
        self.inner = inner
        self.actions: list[tuple[float, int]] = []

    async def current(self, group: str) -> int:
        return await self.inner.current(group)

    async def scale(self, group: str, workers: int) -> None:
        self.actions.append((time.monotonic(), workers))
        await self.inner.scale(group, workers)


async def test_a_backlog_grows_the_group_to_max_then_it_drains_and_shrinks_to_min(
    vhost, tmp_path: Path, monkeypatch
):
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    topology = compile_topology(load_topology(path))
    await apply_topology(topology, vhost)
    sink = tmp_path / "sink.txt"
    env = {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_HANDLERS": "tests.consumers.process_handlers",
        "TASKQ_GRACE": "20",
        "TASKQ_TEST_SINK": str(sink),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the worker processes inherit them
    producer = await open_producer(load_settings(env), confirmed("test"))
    backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
    ids: list[str] = []
    for start in range(0, JOBS, 500):
        done = await submitter.submit_many(
            [
                JobRequest(type="mail.work", payload={"sleep": 0.02})
                for _ in range(start, min(JOBS, start + 500))
            ]
        )
        ids += [d.job_id for d in done]  # type: ignore[union-attr]
    await publisher.close()

    said: list[str] = []
    supervisor = Supervisor([scaled_spec("mail", 1)], grace=20, say=said.append)
    # The suite itself keeps the CPUs busy.
    local = LocalScaler(supervisor, started={"mail": 1}, idle=lambda: 1.0)
    scaler = Recording(local)
    stop = asyncio.Event()
    began = time.monotonic()
    async with SignalReader(vhost, timeout=5) as reader:
        autoscaler = Autoscaler(topology, reader, scaler, interval=1.0)
        running = asyncio.create_task(supervisor.run())
        loop = asyncio.create_task(autoscaler.run(stop))
        try:

            async def at_max() -> bool:
                return await local.current("mail") == 4

            await eventually(at_max, within=30, every=0.2)
            reached_max = time.monotonic() - began

            async def drained() -> bool:
                page = await backends.store.list_jobs(
                    JobSearch(status=JobStatus.SUCCEEDED, limit=1)
                )
                return (
                    len(sink.read_text().split()) >= JOBS
                    if sink.exists()
                    else bool(page.jobs) and False
                )

            await eventually(drained, within=120, every=0.5)
            drained_at = time.monotonic() - began

            async def at_min() -> bool:
                return await local.current("mail") == 1

            await eventually(at_min, within=60, every=0.2)
            back_at_min = time.monotonic() - began
        finally:
            stop.set()
            await loop
            supervisor.stop()
            code = await running
    effects = sink.read_text().split()
    statuses = [(await backends.store.get_job(i)).status for i in ids]  # type: ignore[union-attr]
    await backends.close()
    figures = (
        f"{JOBS} jobs: max (4) after {reached_max:.1f}s, drained after {drained_at:.1f}s, "
        f"back to min (1) after {back_at_min:.1f}s; actions {[w for _, w in scaler.actions]}"
    )
    print(f"\nautoscale: {figures}")
    assert code == 0, said
    assert set(effects) == set(ids), figures  # nothing lost
    assert len(effects) == len(ids), f"{len(effects) - len(set(effects))} ran twice; {figures}"
    assert all(s is JobStatus.SUCCEEDED for s in statuses), figures
    # No flapping: the worker count only rises to its peak, then only falls.
    counts = [w for _, w in scaler.actions]
    peak = counts.index(max(counts))
    assert max(counts) == 4, figures
    assert counts[: peak + 1] == sorted(counts[: peak + 1]), figures
    assert counts[peak:] == sorted(counts[peak:], reverse=True), figures
    assert counts[-1] == 1, figures

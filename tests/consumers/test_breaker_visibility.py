"""Breaker state seen from outside: a worker on the real broker, its SQLite store, and taskctl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import JobStatus
from jobstore.sqlite import SqliteJobStore
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from taskctl.cli import app
from tests.consumers.rig import TOPOLOGY, Rig
from tests.consumers.test_worker_process import TOPOLOGY_FILE
from tests.fakes.blobs import InMemoryBlobStore
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.broker import connect
from topology.settings import WorkerSettings

pytestmark = pytest.mark.rabbitmq
runner = CliRunner()


@pytest.fixture
async def sqlite_rig(vhost, tmp_path: Path) -> AsyncIterator[tuple[Rig, dict[str, str]]]:
    """The worker rig on a SQLite file, and the environment taskctl needs to read that file."""
    await apply_topology(TOPOLOGY, vhost)
    (tmp_path / "topology.yaml").write_text(TOPOLOGY_FILE)
    env = {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    blobs = InMemoryBlobStore()
    registry = HandlerRegistry()
    publisher = await ConfirmedPublisher.connect(vhost, TOPOLOGY)
    connection = await connect(vhost, name="test worker")
    settings = WorkerSettings(grace=5, breaker_threshold=2, breaker_cooldown=1)
    deps = Deps(TOPOLOGY, TOPOLOGY.group("mail"), registry, store, blobs, publisher, settings)
    worker = Worker(deps)
    await worker.start(connection)
    submitter = Submitter(TOPOLOGY, publisher, store, blobs)
    try:
        yield Rig(submitter, store, registry, publisher, worker, vhost, [], deps.metrics), env
    finally:
        await worker.stop(grace=2)
        await connection.close()
        await publisher.close()
        await store.close()


async def taskctl_breakers(env: dict[str, str]) -> list[dict[str, object]]:
    # taskctl runs its own event loop, so it gets a thread of its own.
    result = await asyncio.to_thread(runner.invoke, app, ["breakers", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_an_open_breaker_shows_in_the_store_and_taskctl_until_it_closes(sqlite_rig):
    rig, env = sqlite_rig
    smtp = {"up": False}

    @rig.registry.handler("mail.smtp", depends_on=("smtp",))
    async def send(payload, ctx: JobContext) -> str:
        if not smtp["up"]:
            raise ConnectionError("smtp unreachable")
        return "sent"

    ids = [await rig.submit("mail.smtp", {"n": i}) for i in range(4)]

    async def recorded(state: str) -> bool:
        rows = await rig.store.list_breakers("mail")
        return [(r.dependency, r.state) for r in rows] == [("smtp", state)]

    await eventually(lambda: recorded("open"), within=10, every=0.05)
    labels = {"group": "mail", "dependency": "smtp"}
    assert rig.metrics.registry.get_sample_value("taskq_breaker_state", labels) in (
        1,
        2,
    )  # open or probing
    shown = await taskctl_breakers(env)
    assert [(r["group"], r["dependency"], r["worker"]) for r in shown] == [
        ("mail", "smtp", rig.worker.breaker_report.worker)
    ]
    assert shown[0]["state"] in ("open", "half_open")  # a probe may have started meanwhile
    assert shown[0]["failures"] >= 2

    smtp["up"] = True
    for job_id in ids:
        await rig.until(job_id, JobStatus.SUCCEEDED, within=30)
    await eventually(lambda: recorded("closed"), within=10, every=0.05)
    assert rig.metrics.registry.get_sample_value("taskq_breaker_state", labels) == 0
    assert [(r["state"], r["failures"]) for r in await taskctl_breakers(env)] == [("closed", 0)]

    await rig.worker.stop(grace=2)  # a stopped worker's breakers leave the listing
    assert await taskctl_breakers(env) == []

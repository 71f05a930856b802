"""``taskctl dlq list|show|replay|purge`` against the real broker and a SQLite job store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.dispatch import DeadReason, dead
from jobstore.model import JobStatus
from producers.backends import open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from taskctl.cli import app
from tests.broker import channel, depth
from tests.consumers.rig import TOPOLOGY
from tests.consumers.test_worker_process import TOPOLOGY_FILE
from topology.apply import apply_topology
from topology.envelope import Envelope

pytestmark = pytest.mark.rabbitmq
runner = CliRunner()


@pytest.fixture
async def env(vhost, tmp_path: Path) -> dict[str, str]:
    await apply_topology(TOPOLOGY, vhost)
    (tmp_path / "topology.yaml").write_text(TOPOLOGY_FILE)
    values = {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "COLUMNS": "200",
    }
    # Three jobs that died: submitted (so the store knows them), then dead-lettered as a
    # worker would, and taken off the work queue.
    backends = await open_backends(values)
    publisher = await ConfirmedPublisher.connect(
        backends.broker, backends.topology, backends.publisher
    )
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.submit
    )
    for i in range(3):
        done = await submitter.submit(JobRequest(type=f"mail.kind{i % 2}"))
        job = await backends.store.get_job(done.job_id)
        assert job is not None
        letter = Envelope.new(job.type, None, id=job.id)
        decision = dead(
            letter, DeadReason.EXHAUSTED, f"Boom: {i}", group="mail", topology=backends.topology
        )
        await publisher.publish(decision.envelope, decision.route)
        await backends.store.transition(
            done.job_id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
        )
    await publisher.close()
    await backends.close()
    async with channel(vhost) as ch:
        queue = await ch.get_queue("taskq.mail", ensure=False)
        await queue.purge()
    return values


def cli(env: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=env)


def test_list_show_replay_and_purge(env, vhost):
    listed = cli(env, "dlq", "list", "mail", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert len(rows) == 3
    assert {r["reason"] for r in rows} == {"exhausted"}

    kind0 = json.loads(cli(env, "dlq", "list", "mail", "--type", "mail.kind0", "--json").stdout)
    assert len(kind0) == 2
    shown = json.loads(cli(env, "dlq", "show", "mail", kind0[0]["id"]).stdout)
    assert shown["envelope"]["id"] == kind0[0]["id"]

    refused = cli(env, "dlq", "replay", "mail")
    assert refused.exit_code == 2
    assert "give a filter" in refused.output

    replayed = cli(env, "dlq", "replay", "mail", "--type", "mail.kind0")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 2, left 1 in the DLQ" in replayed.output

    purged = cli(env, "dlq", "purge", "mail", "--error", "Boom", "--yes")
    assert "purged 1, left 0 in the DLQ" in purged.output
    assert json.loads(cli(env, "dlq", "list", "mail", "--json").stdout) == []

    unknown = cli(env, "dlq", "list", "nope")
    assert unknown.exit_code == 1
    assert "no group 'nope'" in unknown.output


async def test_replayed_jobs_are_back_on_the_work_queue(env, vhost):
    result = await asyncio.to_thread(cli, env, "dlq", "replay", "mail", "--all", "--rate", "100")
    assert "replayed 3" in result.output
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.mail") == 3

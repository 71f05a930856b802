"""``taskctl dlq list|show|replay|purge`` against the real broker and a SQLite job store."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.dispatch import DeadReason, dead
from jobstore.model import JobStatus
from jobstore.sqlite import SqliteJobStore
from producers.backends import confirmed, open_producer
from producers.submit import JobRequest
from taskctl.cli import app
from tests.broker import channel, depth
from tests.consumers.test_worker_process import TOPOLOGY_FILE
from tests.helpers import table_rows
from topology.apply import apply_topology
from topology.envelope import Envelope
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq
runner = CliRunner()


# Two groups: the default listing reads every group's DLQ.
TWO_GROUPS = (
    TOPOLOGY_FILE
    + """  bills:
    jobs: ["bill.#"]
"""
)


async def bury(vhost, tmp_path: Path, topology_file: str, types: list[str]) -> dict[str, str]:
    """Return the settings of a vhost whose DLQs hold one dead job of each of ``types``."""
    (tmp_path / "topology.yaml").write_text(topology_file)
    values = {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "COLUMNS": "200",
    }
    # Jobs that died: submitted (so the store knows them), then dead-lettered as a worker
    # would, and taken off the work queue.
    producer = await open_producer(load_settings(values), confirmed("test"))
    backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
    await apply_topology(backends.topology, vhost)
    for i, job_type in enumerate(types):
        done = await submitter.submit(JobRequest(type=job_type))
        await submitter.settle()  # as the job's worker would have written its row
        job = await backends.store.get_job(done.job_id)
        assert job is not None
        letter = Envelope.new(job.type, None, id=job.id)
        group = backends.topology.group_for(job.type)
        assert group is not None
        decision = dead(
            letter, DeadReason.EXHAUSTED, f"Boom: {i}", group=group.name, topology=backends.topology
        )
        await publisher.publish(decision.envelope, decision.route)
        await backends.store.transition(
            done.job_id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
        )
    await publisher.close()
    await backends.close()
    async with channel(vhost) as ch:
        for group in backends.topology.groups:
            for name in group.queue_names:
                await (await ch.get_queue(name, ensure=False)).purge()
    return values


@pytest.fixture
async def env(vhost, tmp_path: Path) -> dict[str, str]:
    return await bury(vhost, tmp_path, TOPOLOGY_FILE, ["mail.kind0", "mail.kind1", "mail.kind0"])


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


async def test_the_commands_replays_and_purges_are_audited_under_the_operators_name(env):
    await asyncio.to_thread(cli, env, "dlq", "replay", "mail", "--type", "mail.kind0")
    await asyncio.to_thread(cli, env, "dlq", "purge", "mail", "--error", "Boom", "--yes")
    store = SqliteJobStore(env["TASKQ_STORE_URL"].removeprefix("sqlite:///"))
    try:
        purged, replayed = await store.list_audit("default", "mail")
    finally:
        await store.close()
    assert (purged.action, purged.matched, purged.kept) == ("purge", 1, 0)
    assert (replayed.action, replayed.matched, replayed.target) == ("replay", 2, "type mail.kind0")
    assert replayed.actor == f"cli:{getpass.getuser()}@{socket.gethostname()}"
    assert replayed.finished_at is not None


async def test_replayed_jobs_are_back_on_the_work_queue(env, vhost):
    result = await asyncio.to_thread(cli, env, "dlq", "replay", "mail", "--all", "--rate", "100")
    assert "replayed 3" in result.output
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.mail") == 3


async def test_list_without_a_group_lists_every_groups_dead_letters_whole_in_80_columns(
    vhost, tmp_path: Path
):
    env = await bury(vhost, tmp_path, TWO_GROUPS, ["mail.welcome", "bill.overdue", "mail.reset"])
    every = json.loads((await asyncio.to_thread(cli, env, "dlq", "list", "--json")).stdout)
    assert sorted((r["group"], r["type"]) for r in every) == [
        ("bills", "bill.overdue"),
        ("mail", "mail.reset"),
        ("mail", "mail.welcome"),
    ]
    table = await asyncio.to_thread(cli, {**env, "COLUMNS": "80"}, "dlq", "list")
    assert table.exit_code == 0, table.output
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    rows = table_rows(table.stdout)
    assert sorted((r["id"], r["reason"], r["group"]) for r in rows) == sorted(
        (r["id"], "exhausted", r["group"]) for r in every
    )
    assert "3 dead letters" in table.stdout
    one = json.loads((await asyncio.to_thread(cli, env, "dlq", "list", "bills", "--json")).stdout)
    assert [r["type"] for r in one] == ["bill.overdue"]


async def test_replay_prints_its_summary_alone_and_logs_only_when_asked(env):
    quiet = await asyncio.to_thread(cli, env, "dlq", "replay", "mail", "--type", "mail.kind1")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "replayed 1, left 2 in the DLQ of group mail\n"
    assert quiet.stderr == ""
    loud = await asyncio.to_thread(
        cli, env, "--verbose", "dlq", "replay", "mail", "--type", "mail.kind0"
    )
    assert loud.exit_code == 0, loud.output
    assert loud.stdout == "replayed 2, left 0 in the DLQ of group mail\n"
    # Logs go to stderr, and read as text for a person, not JSON.
    logged = [line for line in loud.stderr.splitlines() if "back to work" in line]
    assert len(logged) == 2
    assert not any(line.startswith("{") for line in loud.stderr.splitlines())


@pytest.mark.parametrize("command", [("dlq", "list"), ("doctor",)])
def test_a_command_before_the_topology_is_applied_says_what_to_run(
    vhost, tmp_path: Path, command: tuple[str, ...]
):
    env = {
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    listed = cli(env, *command)
    assert listed.exit_code == 1
    assert "does not exist; run `taskctl topology apply` first" in listed.output
    assert "Traceback" not in listed.output

import asyncio
import contextlib
import copy
import json
import shutil
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.broker import TestsManagementClient, channel
from topology.apply import Action, apply_topology, plan_topology, read_live
from topology.compiled import CompiledTopology, compile_topology
from topology.errors import ManagementApiError, TopologyConflictError
from topology.export import export_definitions
from topology.loader import parse_topology
from topology.management import ManagementClient

pytestmark = pytest.mark.rabbitmq


def variant(text: str) -> CompiledTopology:
    return compile_topology(parse_topology(textwrap.dedent(text)))


SMALL = """
delays: {resolution: 1s, longest: 4s}
groups:
  mail: {jobs: [mail], dlq: {retention: 1d}}
  old: {jobs: [old]}
"""


async def test_apply_twice_changes_nothing_the_second_time(vhost, topology):
    first = await apply_topology(topology, vhost)
    total = len(topology.exchanges) + len(topology.queues) + len(topology.bindings)
    assert len(first.before.of(Action.CREATE)) == total
    assert first.after.in_sync
    product, version = first.server.split()
    assert product == "RabbitMQ"
    assert tuple(int(n) for n in version.split(".")[:2]) >= (3, 10)
    # The report says what happened, and only that.
    assert first.summary() == f"{total} created"

    second = await apply_topology(topology, vhost)
    assert second.before.in_sync
    assert second.after.in_sync
    assert second.deleted == ()
    assert second.summary() == f"{total} unchanged"


QUORUM = """
delays: {resolution: 1s, longest: 4s}
groups:
  pay: {jobs: ["pay.#"], priority: {strategy: lanes, queue_type: quorum}}
"""


async def test_the_probe_reads_the_broker_version_and_its_enabled_quorum_flags(broker_settings):
    async with ManagementClient(broker_settings) as client:
        server = await client.server()
    assert server.release[:2] >= (3, 10)
    assert server.version.startswith(".".join(map(str, server.release)))
    assert server.flags is not None
    assert {"quorum_queue", "stream_queue"} <= server.flags
    assert "drop_unroutable_metric" not in server.flags  # disabled on a default node


async def test_plan_and_apply_say_what_the_quorum_group_gets_on_this_broker(vhost):
    async with ManagementClient(vhost) as client:
        server = await client.server()  # its version is in each quorum group's line
    quorum = variant(QUORUM)
    plan = await plan_topology(quorum, vhost)
    report = await apply_topology(quorum, vhost)
    group, tiers = plan.choices
    assert group.startswith(f"group pay: quorum, 4 priority lanes (RabbitMQ {server.version} ")
    assert group.endswith("delivery limit 20")
    assert tiers.startswith("delay tiers: quorum")
    assert report.before.choices == plan.choices
    assert report.after.in_sync
    # The broker holds what the file asked: quorum lanes with the limit, quorum tiers.
    async with ManagementClient(vhost) as client:
        live = {q.name: dict(q.arguments) for q in (await read_live(client, vhost.vhost)).queues}
    assert live["taskq.pay.urgent"]["x-delivery-limit"] == 20
    assert live["taskq.delay.1s"]["x-queue-type"] == "quorum"


async def test_changed_queue_argument_is_a_conflict_that_apply_refuses(vhost):
    await apply_topology(variant(SMALL), vhost)
    changed = variant(SMALL.replace("retention: 1d", "retention: 2d"))

    plan = await plan_topology(changed, vhost)
    assert plan.exit_code == 3
    (conflict,) = plan.of(Action.CONFLICT)
    assert conflict.label == "queue taskq.mail.dlq (classic)"
    assert "x-message-ttl: broker has 86400000, file wants 172800000" in conflict.detail

    with pytest.raises(TopologyConflictError) as info:
        await apply_topology(changed, vhost)
    assert "queue taskq.mail.dlq" in str(info.value)
    assert "--recreate taskq.mail.dlq" in str(info.value)
    # Refused means untouched: the broker still holds the old declaration.
    assert (await plan_topology(variant(SMALL), vhost)).in_sync


async def test_recreate_replaces_an_empty_conflicting_queue(vhost):
    await apply_topology(variant(SMALL), vhost)
    changed = variant(SMALL.replace("retention: 1d", "retention: 2d"))
    report = await apply_topology(changed, vhost, recreate=["taskq.mail.dlq"])
    assert report.deleted == ("queue taskq.mail.dlq",)
    assert report.after.in_sync


async def test_recreate_refuses_a_queue_that_holds_messages(vhost):
    small = variant(SMALL)
    await apply_topology(small, vhost)
    async with channel(vhost) as ch:
        await ch.default_exchange.publish(
            __import__("aio_pika").Message(b"keep me"), routing_key="taskq.mail.dlq"
        )
    changed = variant(SMALL.replace("retention: 1d", "retention: 2d"))
    with pytest.raises(TopologyConflictError, match="holds 1 messages"):
        await apply_topology(changed, vhost, recreate=["taskq.mail.dlq"])
    assert (await plan_topology(small, vhost)).in_sync


async def test_removed_group_is_extra_and_deleted_only_with_prune(vhost):
    await apply_topology(variant(SMALL), vhost)
    smaller = variant(SMALL.replace("  old: {jobs: [old]}\n", ""))

    kept = await apply_topology(smaller, vhost)
    extras = {i.label for i in kept.after.of(Action.EXTRA)}
    assert "queue taskq.old (classic)" in extras
    assert "queue taskq.old.dlq (classic)" in extras
    assert kept.deleted == ()

    pruned = await apply_topology(smaller, vhost, prune=True)
    assert set(pruned.deleted) == {"queue taskq.old", "queue taskq.old.dlq"}
    assert pruned.after.in_sync


async def test_prune_removes_a_binding_the_file_no_longer_declares(vhost):
    await apply_topology(variant(SMALL), vhost)
    narrower = variant(SMALL.replace("mail: {jobs: [mail]", "mail: {jobs: [mail.send]"))
    kept = await apply_topology(narrower, vhost)
    assert [i.label for i in kept.after.of(Action.EXTRA)] == [
        "binding taskq.jobs -> taskq.mail [mail]"
    ]
    pruned = await apply_topology(narrower, vhost, prune=True)
    assert pruned.deleted == ("binding taskq.jobs -> taskq.mail [mail]",)
    assert pruned.after.in_sync


def normalised(live) -> tuple:
    return (set(live.exchanges), set(live.queues), set(live.bindings))


async def test_exported_definitions_import_cleanly_and_equal_what_apply_declares(
    broker_settings, topology, management: TestsManagementClient
):
    imported, applied = "taskq-test-import", "taskq-test-applied"
    for name in (imported, applied):
        await management.create_vhost(name)
    try:
        definitions = export_definitions(topology, vhost=imported)
        await management.import_definitions(imported, copy.deepcopy(definitions))
        await apply_topology(topology, broker_settings.with_vhost(applied))

        assert (await plan_topology(topology, broker_settings.with_vhost(imported))).in_sync
        from_import = normalised(await read_live(management, imported))
        from_apply = normalised(await read_live(management, applied))
        assert from_import == from_apply
        assert len(from_import[1]) == len(topology.queues)
    finally:
        for name in (imported, applied):
            await management.delete_vhost(name)


def world_readable(text: str) -> Path:
    """Write ``text`` where the rabbitmq user can read it (pytest's tmp_path is private).

    Debian's rabbitmqctl runs as that user, and 3.10 cannot import from stdin.
    """
    folder = Path(tempfile.mkdtemp(prefix="taskq-defs-"))
    folder.chmod(0o755)
    path = folder / "definitions.json"
    path.write_text(text)
    path.chmod(0o644)
    return path


async def test_exported_definitions_import_with_rabbitmqctl(
    broker_settings, topology, tmp_path, management
):
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl, "rabbitmqctl comes with the local broker these tests run against"
    vhost = f"taskq-test-ctl-{uuid.uuid4().hex[:6]}"
    path = world_readable(json.dumps(export_definitions(topology, vhost=vhost)))
    shared = path.parent
    try:
        process = await asyncio.create_subprocess_exec(
            rabbitmqctl, "import_definitions", str(path), stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr
        await management.create_vhost(vhost)  # grants guest its permissions on the new vhost
        # rabbitmqctl says the import "is asynchronous": wait for it to land, with a deadline.
        async with asyncio.timeout(30):
            while not (await plan_topology(topology, broker_settings.with_vhost(vhost))).in_sync:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        shutil.rmtree(shared)
        with contextlib.suppress(ManagementApiError):  # a failed import leaves no vhost
            await management.delete_vhost(vhost)

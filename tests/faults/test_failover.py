"""A cluster loses the node its clients were connected to: they resume on another, and no confirmed job is lost."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from jobstore.model import open_store
from producers.client import AsyncClient
from producers.pika_publisher import PikaPublisher
from producers.publisher import ConfirmedPublisher, Publisher
from tests.faults.conftest import worker
from tests.helpers import compiled, write_topology
from tests.localcluster import LocalCluster
from topology.apply import apply_topology
from topology.compiled import CompiledTopology, compile_topology
from topology.envelope import Envelope
from topology.errors import PublishNackedError, TaskqError
from topology.loader import load_topology
from topology.settings import BrokerSettings, read_section

pytestmark = pytest.mark.faults

QUORUM = """
groups:
  email:
    jobs: [email]
    priority: {strategy: lanes, queue_type: quorum}
"""
JOBS = 400


async def submit_through_a_node_loss(env: dict[str, str], kill: Callable[[], None]) -> set[str]:
    """Submit ``JOBS`` jobs one at a time, the node killed a quarter of the way; return the confirmed ids."""
    confirmed: set[str] = set()
    async with await AsyncClient.connect(env) as client:
        for n in range(JOBS):
            if n == JOBS // 4:
                await asyncio.to_thread(kill)
            try:
                job = await client.submit(
                    "email", {"to": f"u{n}@example.com", "template": "welcome"}
                )
            except TaskqError:  # refused while the connection moves: not confirmed, not counted
                await asyncio.sleep(0.1)
                continue
            confirmed.add(job["id"])
    return confirmed


async def succeeded(store_url: str, ids: set[str], within: float) -> set[str]:
    """Return the ids among ``ids`` whose jobs succeeded, waiting up to ``within`` seconds for all."""
    store = open_store(store_url)
    try:
        deadline = time.monotonic() + within
        while True:
            done = {i for i in ids if (job := await store.get_job(i)) and job.status == "succeeded"}
            if done == ids or time.monotonic() > deadline:
                return done
            await asyncio.sleep(0.5)
    finally:
        await store.close()


def test_killing_the_node_clients_use_loses_no_confirmed_job(
    own_cluster: LocalCluster, tmp_path: Path
):
    topology_file = write_topology(tmp_path, QUORUM)
    with own_cluster.vhost() as vhost:
        env = {
            "TASKQ_AMQP_URL": own_cluster.amqp_url(1, vhost),
            "TASKQ_AMQP_FAILOVER": f"127.0.0.1:{own_cluster.base + 2},127.0.0.1:{own_cluster.base + 3}",
            "TASKQ_MANAGEMENT_URL": own_cluster.management_url(1),
            "TASKQ_TOPOLOGY": str(topology_file),
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        }
        topology = compile_topology(load_topology(topology_file))
        asyncio.run(apply_topology(topology, read_section(BrokerSettings, env)))
        try:
            with worker(env, tmp_path / "worker.log") as process:
                kill = functools.partial(own_cluster.kill, 1)
                confirmed = asyncio.run(submit_through_a_node_loss(env, kill))
                ran = asyncio.run(succeeded(env["TASKQ_STORE_URL"], confirmed, within=60))
                assert process.poll() is None, "the worker exited instead of moving to another node"
        finally:
            own_cluster.restart(1)
    assert len(confirmed) > JOBS // 2, f"only {len(confirmed)} of {JOBS} submissions confirmed"
    assert confirmed - ran == set(), f"{len(confirmed - ran)} confirmed jobs never succeeded"


PUBLISHERS: dict[str, Callable[[BrokerSettings, CompiledTopology], Awaitable[Publisher]]] = {
    "ConfirmedPublisher": ConfirmedPublisher.connect,
    "PikaPublisher": PikaPublisher.connect,
}


async def confirmed_within(publisher: Publisher, within: float) -> float | None:
    """Publish a job every 0.2 s while the broker refuses it; return when one was confirmed, or None."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        try:
            await publisher.publish(Envelope.new("email", {"to": "a@example.com"}))
        except PublishNackedError:
            await asyncio.sleep(0.2)
            continue
        return time.monotonic() - began
    return None


async def refused_then_confirmed(
    cluster: LocalCluster, broker: BrokerSettings, topology: CompiledTopology
) -> dict[str, tuple[TaskqError | None, float | None]]:
    """Publish a first job through each publisher while the lanes' leader is dead and no other is elected, then until one is confirmed."""
    publishers = {name: await connect(broker, topology) for name, connect in PUBLISHERS.items()}
    try:
        # Node 1 leads every lane; with node 3 paused as well, node 2 cannot elect a new leader.
        cluster.pause(3)
        try:
            await asyncio.to_thread(cluster.kill, 1)
            first: dict[str, TaskqError | None] = {}
            for name, publisher in publishers.items():
                try:
                    await publisher.publish(Envelope.new("email", {"to": "a@example.com"}))
                    first[name] = None
                except TaskqError as exc:
                    first[name] = exc
        finally:
            cluster.resume(3)
        then = await asyncio.gather(*(confirmed_within(p, 30) for p in publishers.values()))
        return {name: (first[name], took) for name, took in zip(publishers, then, strict=True)}
    finally:
        for publisher in publishers.values():
            await publisher.close()


def test_a_publisher_refused_by_a_lane_without_its_leader_publishes_once_it_has_one(
    own_cluster: LocalCluster, tmp_path: Path
):
    topology_file = write_topology(tmp_path, QUORUM)
    topology = compile_topology(load_topology(topology_file))
    with own_cluster.vhost() as vhost:
        env = {
            "TASKQ_AMQP_URL": own_cluster.amqp_url(1, vhost),
            "TASKQ_MANAGEMENT_URL": own_cluster.management_url(1),
        }
        asyncio.run(apply_topology(topology, read_section(BrokerSettings, env)))
        node2 = read_section(BrokerSettings, {"TASKQ_AMQP_URL": own_cluster.amqp_url(2, vhost)})
        try:
            outcomes = asyncio.run(refused_then_confirmed(own_cluster, node2, topology))
        finally:
            own_cluster.resume(3)
            own_cluster.restart(1)
    for name, (first, took) in outcomes.items():
        print(f"{name}: first publish {type(first).__name__}, confirmed again after {took} s")
        assert isinstance(first, PublishNackedError), f"{name}: the first publish came to {first!r}"
        assert took is not None, f"{name}: refused for 30 s after a leader could be elected"


def test_replicas_place_each_quorum_queue_on_that_many_nodes(own_cluster: LocalCluster):
    topology = compiled(
        """
        groups:
          email: {jobs: [email], priority: {strategy: lanes, queue_type: quorum, replicas: 2}}
          sms: {jobs: [sms], priority: {strategy: lanes, queue_type: quorum}}
        """
    )
    with own_cluster.vhost() as vhost:
        settings = read_section(
            BrokerSettings,
            {
                "TASKQ_AMQP_URL": own_cluster.amqp_url(1, vhost),
                "TASKQ_MANAGEMENT_URL": own_cluster.management_url(1),
            },
        )
        asyncio.run(apply_topology(topology, settings))
        queues = httpx.get(f"{own_cluster.management_url(1)}/api/queues/{vhost}", timeout=10).json()
    members = {q["name"]: len(q.get("members", ())) for q in queues}  # classic queues: none
    email, sms = topology.group("email"), topology.group("sms")
    assert {members[q] for q in (*email.queue_names, email.dead_letter_queue)} == {2}
    assert {members[q] for q in (*sms.queue_names, sms.dead_letter_queue)} == {3}
    # The tiers hold both groups' retries: on every node, as the group without replicas asks.
    assert {members[t.queue] for t in topology.tiers} == {3}

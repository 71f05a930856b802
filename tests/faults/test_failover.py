"""A cluster loses the node its clients were connected to: they resume on another, and no confirmed job is lost."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobstore.factory import open_store
from producers.client import AsyncClient
from tests.faults.conftest import worker
from tests.helpers import write_topology
from tests.localcluster import LocalCluster
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.errors import TaskqError
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

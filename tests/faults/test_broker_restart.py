"""A worker outlives its broker node: killed and restarted, the node is consumed again within two seconds."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from producers.client import AsyncClient
from tests.faults.conftest import worker
from tests.helpers import eventually
from tests.localcluster import LocalCluster
from tests.tlsbroker import listening
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import BrokerSettings, read_section

pytestmark = pytest.mark.faults


async def run_one(env: dict[str, str], within: float) -> None:
    """Submit one job and return once a worker ran it (TimeoutError after ``within`` seconds)."""
    async with await AsyncClient.connect(env) as client:
        job = await client.submit("email", {"to": "ops@example.com", "template": "welcome"})

        async def succeeded() -> bool:
            return (await client.status(job["id"]))["status"] == "succeeded"

        await eventually(succeeded, within=within, every=0.05)


def test_a_worker_consumes_again_within_two_seconds_of_its_broker_coming_back(
    own_cluster: LocalCluster, tmp_path: Path
):
    with own_cluster.vhost() as vhost:
        env = {
            "TASKQ_AMQP_URL": own_cluster.amqp_url(1, vhost),
            "TASKQ_MANAGEMENT_URL": own_cluster.management_url(1),
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        }
        topology = compile_topology(load_topology())
        asyncio.run(apply_topology(topology, read_section(BrokerSettings, env)))
        with worker(env, tmp_path / "worker.log") as process:
            asyncio.run(run_one(env, within=20))
            own_cluster.kill(1)  # a crash: no connection.close, the sockets just die
            time.sleep(3)  # the worker meets refused reconnects meanwhile
            with ThreadPoolExecutor(1) as pool:
                restarting = pool.submit(own_cluster.restart, 1)
                while not listening(own_cluster.base + 1, timeout=0.2):
                    assert not restarting.done() or restarting.exception() is None
                    time.sleep(0.05)
                back = time.monotonic()  # the node takes connections from here on
                restarting.result()
            asyncio.run(run_one(env, within=10))
            recovered = time.monotonic() - back
            assert process.poll() is None, "the worker exited instead of reconnecting"
            # What one job takes anyway (the client connecting, the submit, the polling) is
            # not the worker's recovery.
            steady = time.monotonic()
            asyncio.run(run_one(env, within=10))
            recovered -= time.monotonic() - steady
    assert recovered < 2.0, f"consumed again {recovered:.2f} s after the broker came back"

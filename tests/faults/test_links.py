"""Broken links between a worker and the broker: reset, stalled past the heartbeat, half-closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy, fault_proxy
from tests.faults.conftest import worker
from tests.faults.test_broker_restart import run_one
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import BrokerSettings

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]

HEARTBEAT = 2  # seconds: aiormq gives a silent peer up after three of them


def stall_past_the_heartbeat(proxy: FaultProxy) -> None:
    proxy.stall()
    time.sleep(HEARTBEAT * 3 + 2)
    proxy.resume()


@pytest.mark.parametrize(
    ("fault", "within"),
    [
        pytest.param(FaultProxy.reset, 3.0, id="reset"),
        pytest.param(FaultProxy.half_close, 3.0, id="half-closed"),
        pytest.param(stall_past_the_heartbeat, 5.0, id="stalled"),
    ],
)
def test_a_worker_whose_link_breaks_consumes_again_on_a_new_one(
    vhost: BrokerSettings, tmp_path: Path, fault: Callable[[FaultProxy], None], within: float
):
    asyncio.run(apply_topology(compile_topology(load_topology()), vhost))
    direct = vhost.amqp_url.get_secret_value()
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with fault_proxy((host, int(port))) as proxy:
        through = direct.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/")
        store = {
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        }
        # The worker goes through the proxy; the test's client straight to the broker.
        worker_env = {**store, "TASKQ_AMQP_URL": through, "TASKQ_HEARTBEAT": str(HEARTBEAT)}
        client_env = {**store, "TASKQ_AMQP_URL": direct}
        with worker(worker_env, tmp_path / "worker.log") as process:
            asyncio.run(run_one(client_env, within=20))
            assert proxy.links() >= 1
            fault(proxy)
            broken = time.monotonic()
            asyncio.run(run_one(client_env, within=within + 10))
            recovered = time.monotonic() - broken
            assert process.poll() is None, "the worker exited instead of reconnecting"
    assert recovered < within, f"a job ran {recovered:.2f} s after the link broke"

"""``taskctl autoscale --kubernetes`` as a process: it scales the readers' Deployment and stops cleanly on a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from tests.consumers.autoscaler.conftest import kubeconfig, server_url
from tests.consumers.autoscaler.fake_management import fake_management
from tests.consumers.autoscaler.kube_fake import FakeKube
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_it_scales_a_sources_readers_then_stops_cleanly_on_a_signal(
    kube: TestServer, fake: FakeKube, redis_url, redis_prefix, tmp_path: Path, sig: signal.Signals
):
    stream = f"{redis_prefix}orders"
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "groups:\n  orders: {jobs: [order.created]}\nstreams:\n"
        f'  shop: {{stream: "{stream}", job: order.created, '
        "scale: {min: 1, max: 6, backlog_per_worker: 100}}\n"
    )
    client = aioredis.Redis.from_url(redis_url)
    for n in range(450):
        await client.xadd(stream, {"n": str(n)})
    await client.xgroup_create(stream, "taskq", id="0")
    await client.aclose()
    fake.replicas[("taskq", "taskq-stream-shop")] = 1
    async with fake_management() as management:
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig(tmp_path / "kube" / "config", server_url(kube))),
            "TASKQ_TOPOLOGY": str(topology),
            "TASKQ_MANAGEMENT_URL": management.url,
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_REDIS_URL": redis_url,
            "TASKQ_AUTOSCALER_HOST": "127.0.0.1",
            "TASKQ_AUTOSCALER_PORT": str(free_port()),
            "TASKQ_AUTOSCALE_INTERVAL": "0.2",
            "TASKQ_LOG_FORMAT": "text",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskctl",
            "autoscale",
            "--kubernetes",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:

            async def scaled() -> bool:
                return fake.replicas[("taskq", "taskq-stream-shop")] == 5

            await eventually(scaled, within=30)
            process.send_signal(sig)
            output, _ = await asyncio.wait_for(process.communicate(), 15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert "autoscaler stopped" in text
    assert "Traceback" not in text

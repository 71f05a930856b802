"""``taskctl up`` with the gRPC job API beside the HTTP API and a stream source's readers."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import redis

from producers.grpc_api.v1 import jobs_pb2 as pb
from producers.grpc_api.v1 import jobs_pb2_grpc
from producers.streams.entries import entry_job_id
from tests.helpers import interrupted, reap, wait_healthy, write_topology
from tests.taskctl.test_up import free_port, start_up, up_env

pytestmark = pytest.mark.rabbitmq

TOPOLOGY = """
groups:
  email: {{jobs: [email]}}
  orders: {{jobs: ["order.#"], scale: {{min: 0, max: 1, backlog_per_worker: 500}}}}
streams:
  shop: {{stream: "{prefix}orders", job: "order.{{event}}", event_field: kind, consumers: 2}}
"""


def test_up_serves_grpc_beside_http_and_runs_each_stream_reader(
    vhost, tmp_path: Path, redis_url: str, redis_prefix: str
):
    port, grpc_port = free_port(), free_port()
    path = write_topology(tmp_path, TOPOLOGY.format(prefix=redis_prefix))
    env = up_env(vhost, tmp_path, port) | {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_GRPC": "true",
        "TASKQ_GRPC_PORT": str(grpc_port),
        "TASKQ_REDIS_URL": redis_url,
        "TASKQ_STREAM_BLOCK": "0.2",
        "TASKQ_HANDLERS": "",
    }
    client = redis.Redis.from_url(redis_url)
    process = start_up(env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        key = (tmp_path / ".taskq" / "admin.key").read_text().strip()
        entry = client.xadd(f"{redis_prefix}orders", {"kind": "paid", "n": "1"}).decode()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = jobs_pb2_grpc.JobsStub(channel)
            auth = (("authorization", f"Bearer {key}"),)
            done = stub.Submit(pb.SubmitRequest(type="email"), metadata=auth, timeout=10)
            assert done.job.status == pb.STATUS_QUEUED
            made = entry_job_id("shop", f"{redis_prefix}orders", entry)
            deadline = time.monotonic() + 20
            ids: list[str] = []
            while time.monotonic() < deadline and made not in ids:  # a child process
                page = stub.List(pb.ListRequest(type="order.paid"), metadata=auth, timeout=10)
                ids = [job.id for job in page.jobs]
                time.sleep(0.2)
            assert ids == [made]
        out, _ = interrupted(process)
        assert process.returncode == 0, out[-3000:]
        for name in ("[api] started", "[stream:shop] started", "[stream:shop#2] started"):
            assert name in out
        assert "gRPC job API on 127.0.0.1:" in out
    finally:
        reap(process)
        client.close()

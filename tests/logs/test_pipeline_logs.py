"""The pipeline's processes as on-call sees them: every line they write is a JSON object."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from jobstore.model import JobStatus
from producers.submit import JobRequest
from tests.consumers.rig import TOPOLOGY
from tests.consumers.test_worker_process import TOPOLOGY_FILE, statuses, submit_all
from tests.helpers import eventually, interrupted, reap, wait_healthy
from tests.taskctl.test_up import free_port
from topology.apply import apply_topology

pytestmark = pytest.mark.rabbitmq


def parse_every_line(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"line {number} of {path} is not JSON: {line!r}") from None
        assert isinstance(lines[-1], dict), line
    return lines


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the mail group's worker with its stdout and stderr going to ``log``."""
    full = {**os.environ, **env}
    full.pop("TASKQ_LOG_FORMAT", None)  # the default: JSON, as the output is no terminal
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskctl", "worker", "mail"], env=full, stdout=out, stderr=out
        )


async def test_a_worker_writes_only_json_lines(vhost, tmp_path: Path):
    await apply_topology(TOPOLOGY, vhost)
    (tmp_path / "topology.yaml").write_text(TOPOLOGY_FILE)
    env = {
        "TASKQ_TOPOLOGY": str(tmp_path / "topology.yaml"),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_HANDLERS": "tests.consumers.process_handlers",
        "TASKQ_TEST_SINK": str(tmp_path / "sink.txt"),
    }
    ids = await submit_all(env, [JobRequest(type="mail.log", payload={"secret": "x"})] * 3)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:

        async def all_succeeded() -> bool:
            return all(s is JobStatus.SUCCEEDED for s in await statuses(env, ids))

        await eventually(all_succeeded, within=30)
        # A message that is no envelope at all: the worker warns and dead-letters it.
        connection = await aio_pika.connect(vhost.amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel()
            queue = TOPOLOGY.group("mail").queue_names[0]
            await channel.default_exchange.publish(aio_pika.Message(b"not json"), queue)

        async def warned() -> bool:
            return "undecodable" in log.read_text()

        await eventually(warned, within=30)
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0
    lines = parse_every_line(log)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("worker for group mail consuming") for m in messages), messages
    assert any(m.startswith("undecodable message dead-lettered") for m in messages), messages
    assert any(m.startswith("worker for group mail draining") for m in messages), messages
    assert all(line["process"] == worker.pid for line in lines)


def test_taskctl_up_to_a_file_writes_only_json_lines_and_no_payload(vhost, tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_PORT": str(port),
        "TASKQ_AUTOSCALER_PORT": str(free_port()),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_DATA_DIR": str(tmp_path / ".taskq"),
    }
    env.pop("TASKQ_LOG_FORMAT", None)
    log = tmp_path / "up.log"
    with log.open("w") as out:  # `taskctl up > up.log`
        process = subprocess.Popen(
            [sys.executable, "-c", "from taskctl.cli import main; main()", "up", "--grace", "10"],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process)
        key = (tmp_path / ".taskq" / "admin.key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        job = {"type": "email", "payload": {"to": "private@example.com"}}
        job_id = httpx.post(f"{base}/jobs", json=job, headers=auth, timeout=10).json()["id"]
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != "succeeded":  # a child process
            status = httpx.get(f"{base}/jobs/{job_id}", headers=auth, timeout=5).json()["status"]
            time.sleep(0.2)
        assert status == "succeeded"
        _, errors = interrupted(process)
    finally:
        reap(process)
    assert process.returncode == 0, errors
    assert errors == ""
    lines = parse_every_line(log)
    assert "private@example.com" not in log.read_text()  # payloads stay out of the logs
    messages = [line["message"] for line in lines]
    assert any("topology applied" in m for m in messages), messages
    assert any(m.startswith("[worker:email] started") for m in messages), messages
    assert any(line["logger"].startswith("uvicorn") for line in lines), messages
    [handled] = [line for line in lines if line["message"].startswith("would send an email")]
    assert handled["job_id"] == job_id
    assert handled["job_type"] == "email"
    assert len({line["process"] for line in lines}) >= 4  # up, the API and two workers

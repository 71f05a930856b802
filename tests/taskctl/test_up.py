import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, process: subprocess.Popen, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # a child process: nothing to await but its port
        assert process.poll() is None, "taskctl up exited early"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API did not become ready")


def test_up_runs_the_api_so_the_quick_start_curl_gets_202_and_ctrl_c_stops_it(
    vhost, tmp_path: Path
):
    port = free_port()
    env = {
        **os.environ,
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_PORT": str(port),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_DATA_DIR": str(tmp_path / ".taskq"),
        "COLUMNS": "200",
    }
    env.pop("TASKQ_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from taskctl.cli import main; main()", "up", "--grace", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process)
        # The first start made an admin key that only its owner can read.
        key_file = tmp_path / ".taskq" / "admin.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        curl = [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"{base}/jobs",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"type":"email","payload":{"to":"user@example.com"}}',
            "-w",
            "\n%{http_code}",
        ]
        stranger = subprocess.run(curl, capture_output=True, text=True, timeout=30, check=True)
        assert stranger.stdout.endswith("\n401"), stranger.stdout
        # The README's quick start, byte for byte (but the port), run by a shell next to .taskq.
        quick_start = next(
            line
            for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("curl -X POST http://localhost:8080/jobs")
        )
        assert '-H "Authorization: Bearer $(cat .taskq/admin.key)"' in quick_start
        command = quick_start.replace("http://localhost:8080", base) + " -sS -w '\n%{http_code}'"
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        body, code = done.stdout.rsplit("\n", 1)
        assert code == "202", done.stdout
        assert '"status":"queued"' in body
        # The email worker that `up` started runs the shipped example handler to the end.
        job_id = httpx.Response(200, content=body).json()["id"]
        deadline = time.monotonic() + 30
        job: dict = {}
        while time.monotonic() < deadline and job.get("status") != "succeeded":  # a child process
            job = httpx.get(
                f"{base}/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=5
            ).json()
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        assert job["result"] == {
            "to": "user@example.com",
            "subject": "Welcome",
            "status": "recorded, not sent",
        }
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, rest
    assert "topology applied" in rest
    assert f"admin API key (every scope, tenant default) written to {key_file}" in rest
    assert "stopping 3 processes" in rest  # the API, the email worker and the callbacks worker
    assert "[worker:email] started" in rest
    assert "[worker:callbacks] started" in rest

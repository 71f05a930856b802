import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import interrupted, reap, wait_healthy

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_runs_the_api_so_the_quick_start_curl_gets_202_and_ctrl_c_stops_it(
    vhost, tmp_path: Path
):
    port = free_port()
    env = up_env(vhost, tmp_path, port)
    process = start_up(env)
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
        rest, _ = interrupted(process)
    finally:
        reap(process)
    assert process.returncode == 0, rest
    # Its log is JSON lines only, down to the last, and says what the apply did.
    messages = [json.loads(line)["message"] for line in rest.splitlines()]
    (applied,) = [m for m in messages if "topology applied" in m]
    assert applied.endswith(": 59 created")
    written = f"admin API key (every scope, tenant default) written to {key_file}"
    assert any(m.startswith(written) for m in messages)
    assert "stopping 3 processes (grace 10s)" in messages  # the API and two workers
    assert "[worker:email] started" in rest
    assert "[worker:callbacks] started" in rest

    # The second start finds the topology in place.
    again = start_up(env)
    try:
        assert again.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "topology applied" not in line:  # a child process
            line = again.stdout.readline()
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=30)
    finally:
        if again.poll() is None:
            again.kill()
            again.communicate()
    assert json.loads(line)["message"].endswith(": 59 unchanged")


def up_env(vhost, tmp_path: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_PORT": str(port),
        "TASKQ_AUTOSCALER_PORT": str(free_port()),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_DATA_DIR": str(tmp_path / ".taskq"),
    }
    for name in ("TASKQ_API_KEY", "TASKQ_LOG_FORMAT", "TASKQ_LOG_LEVEL"):
        env.pop(name, None)
    return env


def start_up(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start ``taskctl up`` (or ``taskctl ARGS``) with its log piped: JSON lines."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from taskctl.cli import main; main()",
            *(args or ("up", "--grace", "10")),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("command", "setting"),
    [("up", "TASKQ_PORT"), ("up", "TASKQ_AUTOSCALER_PORT"), ("autoscale", "TASKQ_AUTOSCALER_PORT")],
)
def test_a_taken_port_stops_it_at_once_with_one_json_line_that_names_it(
    vhost, tmp_path: Path, command: str, setting: str
):
    env = up_env(vhost, tmp_path, free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env[setting] = str(port)
        process = start_up(env, command)
        try:
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 1, output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert "never awaited" not in output
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error is lines[-1]
    assert f"127.0.0.1:{port}" in error["message"]
    assert setting in error["message"]
    assert not any("started (pid" in line["message"] for line in lines)  # no process was


def test_a_killed_up_takes_its_processes_with_it(vhost, tmp_path: Path):
    # SIGKILL leaves the supervisor no chance to stop its children: the kernel tells them.
    port = free_port()
    process = start_up(up_env(vhost, tmp_path, port))
    children: set[int] = set()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while len(children) < 3 and time.monotonic() < deadline:  # the API and two workers
            message = json.loads(process.stdout.readline())["message"]
            if "started (pid " in message:
                children.add(int(message.split("(pid ")[1].rstrip(")")))
        assert len(children) == 3, children
        process.kill()
        process.communicate(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (alive := [p for p in children if running(p)]):
            time.sleep(0.2)
        assert alive == []
    finally:
        reap(process)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Return whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"

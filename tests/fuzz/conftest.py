"""The real stack for fuzzing: ``taskctl serve`` on a vhost of its own, SQLite, local blobs.

One process serves every fuzz test of the session; its log is kept so a test can show that
no request made a traceback, and ``taskctl doctor`` checks store and broker afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import wait_healthy
from tests.security.conftest import GITHUB_SECRET, STANDARD_SECRET, free_port
from topology.settings import BrokerSettings


@dataclass
class Served:
    """A running API process: its URL, an admin key, environment, pid and log file."""

    base: str
    key: str
    env: dict[str, str]
    pid: int
    log: Path

    def problems_logged(self) -> list[str]:
        """Return the log lines at ERROR or above, or holding a traceback."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if "Traceback" in line or '"level":"ERROR"' in line or '"level":"CRITICAL"' in line
        ]

    def taskctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``taskctl`` against this stack's broker and store."""
        return _taskctl(self.env, *args, check=check)


def _taskctl(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", "from taskctl.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="session")
def served(
    broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Run ``taskctl serve`` on a vhost of its own; yield how to reach and check it."""
    user, password = broker_settings.management_credentials
    vhost = f"taskq-fuzz-{uuid.uuid4().hex[:10]}"
    management = httpx.Client(base_url=broker_settings.management_base, auth=(user, password))
    management.put(f"/api/vhosts/{vhost}").raise_for_status()
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    management.put(f"/api/permissions/{vhost}/{user}", json=perms).raise_for_status()
    data = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        **os.environ,
        "TASKQ_AMQP_URL": broker_settings.with_vhost(vhost).amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{data}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{data}/blobs",
        "TASKQ_DATA_DIR": str(data),
        "TASKQ_PORT": str(port),
        "TASKQ_WEBHOOK_GITHUB_SECRET": GITHUB_SECRET,
        "TASKQ_WEBHOOK_STANDARD_SECRET": STANDARD_SECRET,
        "TASKQ_LOG_LEVEL": "INFO",
        "TASKQ_RATE_LIMIT": "0",  # unlimited: the fuzzers are the one client
        "TASKQ_WEBHOOK_RATE_LIMIT": "0",
    }
    log = data / "serve.log"
    process = None
    try:
        _taskctl(env, "topology", "apply")
        scopes = [
            a for s in ("jobs:write", "jobs:read", "admin", "metrics:read") for a in ("--scope", s)
        ]
        made = orjson.loads(_taskctl(env, "keys", "create", "fuzz", *scopes, "--json").stdout)
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "taskctl", "serve"], env=env, stdout=sink, stderr=sink
            )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, within=60)
        yield Served(base, made["key"], env, process.pid, log)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        management.delete(f"/api/vhosts/{vhost}")
        management.close()

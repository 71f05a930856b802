"""Schemathesis over the whole OpenAPI document of ``taskctl serve``, a real process.

With a valid key no generated request gets a 5xx or breaks the documented schema; without
one, every secured operation answers 401 (and the public ones still no 5xx).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskctl.assembly import api_app
from tests.credentials import bearer
from tests.security.conftest import GITHUB_SECRET, STANDARD_SECRET, free_port
from topology.settings import BrokerSettings, Settings

pytestmark = pytest.mark.rabbitmq

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


def _taskctl(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from taskctl.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def served(
    broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Run ``taskctl serve`` on a vhost of its own; yield its URL and an admin key."""
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
        "TASKQ_LOG_LEVEL": "WARNING",
    }
    process = None
    try:
        _taskctl(env, "topology", "apply")
        made = orjson.loads(_taskctl(env, "keys", "create", "fuzz", *_every_scope(), "--json"))
        process = subprocess.Popen(
            [sys.executable, "-m", "taskctl", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, process)
        assert httpx.get(f"{base}/openapi.json").json() == orjson.loads(orjson.dumps(DOCUMENT))
        yield {"base": base, "key": made["key"]}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        management.delete(f"/api/vhosts/{vhost}")
        management.close()


def _every_scope() -> list[str]:
    return [
        arg
        for scope in ("jobs:write", "jobs:read", "admin", "metrics:read")
        for arg in ("--scope", scope)
    ]


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a child process: nothing to await but its port
        assert process.poll() is None, "taskctl serve exited early"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("taskctl serve did not become ready")


# The document of the app ``taskctl serve`` assembles (building it opens nothing); the calls
# go over HTTP to the real process, which serves the same document.
DOCUMENT = api_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _secured(case: Any) -> bool:
    return bool(case.operation.definition.raw.get("security"))


@schema.parametrize()
@FUZZ
def test_with_a_valid_key_nothing_breaks(case: Any, served: dict[str, str]) -> None:
    response = case.call(base_url=served["base"], headers=bearer(served["key"]))
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_without_a_key_every_secured_operation_is_401(case: Any, served: dict[str, str]) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers
    response = case.call(base_url=served["base"])
    if _secured(case):
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert response.headers["www-authenticate"][0].startswith("Bearer")
    case.validate_response(response, checks=CHECKS)

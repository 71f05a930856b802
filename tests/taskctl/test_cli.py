import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskctl.cli import app
from tests.helpers import MINIMAL, write_topology
from topology.export import export_definitions

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def test_validate_summarises_the_default_topology():
    result = invoke("topology", "validate")
    assert result.exit_code == 0, result.output
    assert "group email: jobs email, email.* -> taskq.email" in result.output
    assert "17 delay tiers (1s .. 65536s)" in result.output


def test_invalid_topology_file_exits_1_with_the_problem(tmp_path: Path):
    path = write_topology(tmp_path, "groups:\n  a: {jobs: [a], prefetch: lots}\n")
    result = invoke("topology", "validate", "-f", str(path))
    assert result.exit_code == 1
    assert "groups.a.prefetch (line 2)" in result.output
    assert "Traceback" not in result.output


def test_taskq_topology_env_selects_the_file(tmp_path: Path):
    path = write_topology(tmp_path, MINIMAL)
    result = invoke("topology", "validate", env={"TASKQ_TOPOLOGY": str(path)})
    assert result.exit_code == 0, result.output
    assert "group email: jobs email -> taskq.email" in result.output


def test_bad_setting_exits_1_naming_the_variable():
    result = invoke("topology", "plan", env={"TASKQ_HEARTBEAT": "often"})
    assert result.exit_code == 1
    assert "TASKQ_HEARTBEAT" in result.output


def test_export_writes_definitions_to_a_file(tmp_path: Path, topology):
    target = tmp_path / "defs.json"
    result = invoke("topology", "export", "-o", str(target), "--vhost", "jobs")
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text()) == export_definitions(topology, vhost="jobs")


def test_export_prints_json_to_stdout(topology):
    result = invoke("topology", "export")
    assert json.loads(result.stdout) == export_definitions(topology)


def test_graph_prints_mermaid():
    result = invoke("topology", "graph")
    assert result.exit_code == 0
    assert result.stdout.startswith("flowchart LR")


@pytest.mark.rabbitmq
def test_plan_apply_plan_against_the_broker(vhost):
    vh = vhost.vhost
    before = invoke("topology", "plan", "--vhost", vh)
    assert before.exit_code == 2, before.output
    assert "+ create   queue taskq.email (classic)" in before.output

    applied = invoke("topology", "apply", "--vhost", vh)
    assert applied.exit_code == 0, applied.output
    assert "RabbitMQ 3." in applied.output
    assert applied.output.splitlines()[-1].endswith(": 59 created")
    again = invoke("topology", "apply", "--vhost", vh)
    assert again.output.splitlines()[-1].endswith(": 59 unchanged")

    after = invoke("topology", "plan", "--vhost", vh)
    assert after.exit_code == 0, after.output
    assert "59 match, 0 to create, 0 to conflict, 0 extra" in after.output


@pytest.mark.rabbitmq
def test_conflict_exits_3_on_plan_and_1_on_apply(vhost, tmp_path: Path):
    vh = vhost.vhost
    first = write_topology(tmp_path, MINIMAL, "a.yaml")
    assert invoke("topology", "apply", "--vhost", vh, "-f", str(first)).exit_code == 0
    second = write_topology(tmp_path, MINIMAL + "    dlq: {retention: 1d}\n", "b.yaml")

    plan = invoke("topology", "plan", "--vhost", vh, "-f", str(second))
    assert plan.exit_code == 3
    assert "! conflict queue taskq.email.dlq (classic): x-message-ttl" in plan.output

    apply = invoke("topology", "apply", "--vhost", vh, "-f", str(second))
    assert apply.exit_code == 1
    assert "differ from the topology file" in apply.output
    assert "--recreate taskq.email.dlq" in apply.output


QUORUM = MINIMAL + "    priority: {strategy: lanes, queue_type: quorum}\n"


@pytest.mark.rabbitmq
def test_plan_and_apply_print_what_a_quorum_group_gets_on_the_broker(vhost, tmp_path: Path):
    path = write_topology(tmp_path, QUORUM)
    plan = invoke("topology", "plan", "--vhost", vhost.vhost, "-f", str(path))
    apply = invoke("topology", "apply", "--vhost", vhost.vhost, "-f", str(path))
    assert (plan.exit_code, apply.exit_code) == (2, 0), apply.output
    for output in (plan.output, apply.output):
        assert "group email: quorum, 4 priority lanes (RabbitMQ 3." in output
        assert "delay tiers: quorum" in output


@contextmanager
def management_api(version: str, flags: list[str]) -> Iterator[str]:
    """Serve a management API on 127.0.0.1 that names ``version`` and enables ``flags``; yield its URL."""
    answers = {
        "/api/overview": {"rabbitmq_version": version},
        "/api/feature-flags": [{"name": name, "state": "enabled"} for name in flags],
    }

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers.get(self.path, {})).encode()
            self.send_response(200 if self.path in answers else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Answer) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://guest:guest@127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


@pytest.mark.parametrize(
    ("version", "flags", "said"),
    [
        ("3.9.29", ["quorum_queue", "stream_queue"], "RabbitMQ 3.9.29 is older than 3.10"),
        ("3.10.8", ["stream_queue"], "RabbitMQ 3.10.8 has feature flag quorum_queue off"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_broker_that_cannot_hold_a_quorum_group_is_refused(
    tmp_path: Path, command: str, version: str, flags: list[str], said: str
):
    path = write_topology(tmp_path, QUORUM)
    with management_api(version, flags) as url:
        result = invoke("topology", command, "-f", str(path), env={"TASKQ_MANAGEMENT_URL": url})
    assert result.exit_code == 1
    assert "group email declares queue_type: quorum" in result.output
    assert said in result.output
    assert "Traceback" not in result.output


@pytest.mark.rabbitmq
def test_unreachable_management_api_is_a_clear_error(vhost):
    env = {"TASKQ_MANAGEMENT_URL": "http://127.0.0.1:1", "TASKQ_MANAGEMENT_TIMEOUT": "2"}
    result = invoke("topology", "plan", "--vhost", vhost.vhost, env=env)
    assert result.exit_code == 1
    assert "management plugin on?" in result.output


# What only the commands that run them may load: the worker, the web stack, the broker client,
# the AWS SDK, the packages above the job API.
HEAVY = ("consumers", "webhooks", "fastapi", "uvicorn", "aiohttp", "aio_pika", "aiormq", "boto3")


def imported(args: list[str], env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Run ``taskctl ARGS`` in a process of its own; return the modules it imported and its stdout."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from taskctl.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    assert "taskctl.cli" in modules  # the report is there to read
    return modules, done.stdout


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_help_loads_none_of_what_the_commands_run():
    modules, text = imported(["--help"])
    assert "Commands:" in text
    assert [p for p in (*HEAVY, "pydantic", "producers") if loaded(modules, p)] == []


def test_every_help_is_whole_in_80_columns():
    for args in ([], ["topology"], ["dlq"], ["keys"], ["retention"]):
        result = invoke(*args, "--help", env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        # A first sentence too long for the listing would be cut short with "...".
        cut = [
            line
            for line in result.output.splitlines()
            if line.endswith("...") and not line.startswith("Usage:")
        ]
        assert cut == []

"""``taskctl submit|status|jobs|cancel|watch|queues`` against the real broker and a SQLite store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskctl.cli import app
from tests.helpers import table_rows
from tests.taskctl.test_cli import HEAVY, imported, loaded

pytestmark = pytest.mark.rabbitmq
runner = CliRunner()


@pytest.fixture
def env(applied, tmp_path: Path) -> dict[str, str]:
    return {
        "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "COLUMNS": "200",
    }


def cli(env: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=env)


def test_submit_status_jobs_and_cancel_speak_json(env):
    submitted = cli(
        env,
        "submit",
        "email",
        "--payload",
        '{"to": "a@example.com"}',
        "--priority",
        "high",
        "--delay",
        "60",
        "--json",
    )
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert (job["type"], job["status"], job["priority"]) == ("email", "scheduled", "high")

    status = cli(env, "status", job["id"], "--json")
    assert json.loads(status.stdout)["id"] == job["id"]

    listed = json.loads(cli(env, "jobs", "--type", "email", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]

    cancelled = cli(env, "cancel", job["id"], "--json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = cli(env, "cancel", job["id"])
    assert again.exit_code == 1
    assert "only scheduled or queued jobs can be cancelled" in again.output


def test_submit_prints_a_table_for_people_and_refuses_bad_input(env):
    table = cli(env, "submit", "job.report")
    assert table.exit_code == 0, table.output
    assert "job.report" in table.stdout
    assert "queued" in table.stdout
    unknown = cli(env, "submit", "sms")
    assert unknown.exit_code == 1
    assert "unknown job type 'sms'" in unknown.output
    bad = cli(env, "submit", "email", "--payload", "{nope")
    assert bad.exit_code == 2
    assert "--payload is not JSON" in bad.output


def test_status_of_an_unknown_job_is_a_clear_error(env):
    result = cli(env, "status", "no-such-job")
    assert result.exit_code == 1
    assert "no job has id 'no-such-job'" in result.output


def test_queues_shows_every_group_queue_from_the_management_api(env):
    cli(env, "submit", "email")
    rows = json.loads(cli(env, "queues", "--json").stdout)
    by_queue = {r["queue"]: r for r in rows}
    assert (
        by_queue["taskq.email"]["ready"] == 1 or by_queue["taskq.email"]["ready"] == 0
    )  # stats lag ~5 s
    assert {"taskq.email", "taskq.email.dlq", "taskq.github", "taskq.default"} <= set(by_queue)
    assert all(r["consumers"] == 0 for r in rows)


def test_watch_follows_a_job_until_it_is_final(env):
    job = json.loads(cli(env, "submit", "email", "--delay", "60", "--json").stdout)
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from taskctl.cli import main; main()",
            "watch",
            job["id"],
            "--timeout",
            "30",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert watcher.stdout is not None
    deadline = time.monotonic() + 30
    first = ""
    while time.monotonic() < deadline and "scheduled" not in first:
        first = watcher.stdout.readline()
    assert "scheduled" in first
    assert cli(env, "cancel", job["id"]).exit_code == 0
    rest, _ = watcher.communicate(timeout=30)
    assert "cancelled" in rest
    assert watcher.returncode == 1  # final, but not succeeded


def test_in_80_columns_jobs_and_status_print_ids_and_statuses_whole(env):
    narrow = {**env, "COLUMNS": "80"}
    first = json.loads(cli(env, "submit", "email", "--delay", "60", "--json").stdout)
    second = json.loads(cli(env, "submit", "job.report", "--json").stdout)
    assert cli(env, "cancel", first["id"]).exit_code == 0

    listed = cli(narrow, "jobs")
    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    rows = table_rows(listed.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [
        (second["id"], "queued"),
        (first["id"], "cancelled"),
    ]

    shown = cli(narrow, "status", first["id"])
    assert shown.exit_code == 0, shown.output
    pairs = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in shown.stdout.splitlines()]
    fields = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    assert (fields["id"], fields["status"], fields["type"]) == (first["id"], "cancelled", "email")


def test_status_reads_the_store_without_loading_the_broker_client_or_the_web_stack(env):
    job = json.loads(cli(env, "submit", "email", "--json").stdout)
    modules, text = imported(["status", job["id"]], env)
    assert job["id"] in text
    assert [p for p in HEAVY if loaded(modules, p)] == []


def test_an_error_is_one_line_on_stderr(env):
    unknown = cli(env, "status", "no-such-job")
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr == "error: no job has id 'no-such-job'\n"
    # The broker client's own log of the refused connection stays out of it.
    down = cli({**env, "TASKQ_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}, "submit", "email")
    assert (down.exit_code, down.stdout) == (1, "")
    assert down.stderr.count("\n") == 1
    assert down.stderr.startswith(
        "error: cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/"
    )

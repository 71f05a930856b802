"""``taskctl breakers`` against a SQLite job store (it needs no broker)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobstore.model import BreakerRecord
from jobstore.sqlite import SqliteJobStore
from taskctl.cli import app
from tests.helpers import table_rows, write_topology

runner = CliRunner()
TOPOLOGY = """
groups:
  mail:
    jobs: ["mail.#"]
  billing:
    jobs: ["billing.#"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "TASKQ_TOPOLOGY": str(write_topology(tmp_path, TOPOLOGY)),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "COLUMNS": "200",
    }


def record(env: dict[str, str], *breakers: BreakerRecord) -> None:
    async def go() -> None:
        store = SqliteJobStore(env["TASKQ_STORE_URL"].removeprefix("sqlite:///"))
        try:
            await store.migrate()
            for breaker in breakers:
                await store.record_breaker(breaker)
        finally:
            await store.close()

    asyncio.run(go())


def cli(env: dict[str, str], *args: str):
    return runner.invoke(app, ["breakers", *args], env=env)


def test_breakers_lists_every_worker_s_breakers_as_a_table_and_as_json(env):
    now = datetime.now(UTC)
    record(
        env,
        BreakerRecord("mail", "smtp", "host-a:101", "open", 5, now - timedelta(seconds=95)),
        BreakerRecord("mail", "smtp", "host-b:202", "half_open", 6, now - timedelta(hours=2)),
        BreakerRecord("billing", "stripe", "host-a:101", "closed", 0, now),
    )
    table = cli({**env, "COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    rows = table_rows(table.stdout)
    row = next(r for r in rows if r["worker"] == "host-a:101" and r["dependency"] == "smtp")
    assert (row["group"], row["state"], row["failures"]) == ("mail", "open", "5")
    assert row["since"].startswith("1m3")  # 95 s ago, give or take this test's own run time
    assert any(r["state"] == "half_open" and r["since"].startswith("2h") for r in rows)

    rows = json.loads(cli(env, "--json").stdout)
    assert [(r["group"], r["dependency"], r["worker"], r["state"]) for r in rows] == [
        ("billing", "stripe", "host-a:101", "closed"),
        ("mail", "smtp", "host-a:101", "open"),
        ("mail", "smtp", "host-b:202", "half_open"),
    ]
    assert rows[1]["failures"] == 5
    assert 95 <= rows[1]["age_s"] < 120
    assert datetime.fromisoformat(rows[1]["changed_at"]) == now - timedelta(seconds=95)

    mail = json.loads(cli(env, "--group", "mail", "--json").stdout)
    assert {r["group"] for r in mail} == {"mail"}
    assert len(mail) == 2


def test_no_breakers_says_so_and_json_is_an_empty_list(env):
    record(env)
    empty = cli(env)
    assert empty.exit_code == 0, empty.output
    assert "no circuit breakers recorded" in empty.stdout
    assert "in group billing" in cli(env, "--group", "billing").stdout
    assert json.loads(cli(env, "--json").stdout) == []


def test_an_unknown_group_exits_1_naming_the_groups(env):
    result = cli(env, "--group", "mial")
    assert result.exit_code == 1
    assert "no group 'mial' in the topology; groups: mail, billing" in result.output
    assert "Traceback" not in result.output

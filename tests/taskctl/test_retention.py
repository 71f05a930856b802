"""``taskctl retention sweep``, and the API's retention sweep in the background."""

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobstore.blobs import LocalDirBlobStore, blob_key
from jobstore.model import JobRecord
from jobstore.sqlite import SqliteJobStore
from taskctl.cli import app
from tests.helpers import eventually, write_topology
from tests.producers.test_api_stack import running
from tests.producers.test_retention import HOUR, ended, stored, with_blob
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.envelope import new_job_id
from topology.loader import load_topology

runner = CliRunner()


def environment(tmp_path: Path, retention: str) -> dict[str, str]:
    topology = write_topology(
        tmp_path, f"groups:\n  email: {{jobs: [email], retention: {retention}}}\n"
    )
    return {
        "TASKQ_TOPOLOGY": str(topology),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }


def payload_files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "blobs" / "payloads").rglob("*") if p.is_file()}


def test_taskctl_retention_sweep_removes_what_is_due_and_counts_it(tmp_path: Path):
    env = environment(tmp_path, "1h") | {"TASKQ_ORPHAN_BLOB_GRACE": "600"}
    blobs = LocalDirBlobStore(tmp_path / "blobs")
    old_orphan, new_orphan = new_job_id(), new_job_id()

    async def arrange() -> list[JobRecord]:
        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
        await store.migrate()
        try:
            jobs = [await with_blob(blobs, ended(2 * HOUR)) for _ in range(3)]
            jobs.append(await with_blob(blobs, ended(60)))
            await stored(store, *jobs)
        finally:
            await store.close()
        for job_id in (old_orphan, new_orphan):
            await blobs.put(blob_key(job_id), b"{}", "application/json")
        return jobs

    jobs = asyncio.run(arrange())
    an_hour_ago = time.time() - HOUR
    os.utime(tmp_path / "blobs" / blob_key(old_orphan), (an_hour_ago, an_hour_ago))
    result = runner.invoke(app, ["retention", "sweep", "--batch", "2"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(" so far")
    assert lines[-1] == ("done: 3 finished jobs, 3 of their blobs and 1 orphaned blobs removed")
    assert payload_files(tmp_path) == {jobs[3].id, new_orphan}
    again = runner.invoke(app, ["retention", "sweep", "--json"], env=env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"jobs": 0, "blobs": 0, "orphans": 0}


@pytest.mark.rabbitmq
async def test_the_api_removes_finished_jobs_and_their_blobs_in_the_background(
    vhost, tmp_path: Path
):
    env = environment(tmp_path, "1s") | {
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_CLAIM_CHECK_BYTES": "2048",
        "TASKQ_RETENTION_SWEEP_INTERVAL": "0.2",
    }
    await apply_topology(compile_topology(load_topology(env["TASKQ_TOPOLOGY"])), vhost)
    async with running(env) as client:
        big = await client.post("/jobs", json={"type": "email", "payload": {"doc": "x" * 5000}})
        waiting = await client.post("/jobs", json={"type": "email"})
        done, kept = big.json()["id"], waiting.json()["id"]
        assert payload_files(tmp_path) == {done}
        cancelled = await client.delete(f"/jobs/{done}")
        assert cancelled.json()["status"] == "cancelled"

        async def gone() -> bool:
            missing = (await client.get(f"/jobs/{done}")).status_code == 404
            return missing and payload_files(tmp_path) == set()

        await eventually(gone, within=10, every=0.1)
        # A queued job is never removed, however old.
        assert (await client.get(f"/jobs/{kept}")).json()["status"] == "queued"
        metrics = (await client.get("/metrics")).text
    assert "taskq_retention_jobs_removed_total 1.0" in metrics
    assert 'taskq_retention_blobs_removed_total{reason="expired"} 1.0' in metrics

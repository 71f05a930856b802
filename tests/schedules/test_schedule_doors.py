"""Schedules through every door: the store's memory, pause and resume over HTTP and taskctl, a scheduler paused mid-run."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobstore.model import JobSearch, JobStore
from jobstore.sqlite import SqliteJobStore
from producers.auth.principal import Scope
from producers.leadership import Leadership
from producers.metrics import SchedulerMetrics
from producers.publisher import ConfirmedPublisher
from producers.scheduler import Scheduler
from producers.submit import Submitter
from taskctl.cli import app
from tests.credentials import bearer, issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.helpers import compiled, eventually, table_rows, write_topology
from tests.producers.api_harness import make_api
from tests.schedules.compressed_scheduler import compressed
from topology.apply import apply_topology

TOPOLOGY = """
groups:
  periodic: {jobs: ["sched.#"]}
schedules:
  beat: {every: 1s, job: sched.beat, misfire: skip, grace: 2s}
  nightly: {cron: "0 3 * * *", timezone: Europe/Paris, job: sched.report, payload: {full: true}}
"""
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_the_store_remembers_each_schedule(sql_store: JobStore):
    states = await sql_store.schedule_states(["beat", "nightly"], T0)
    assert {s.since for s in states.values()} == {T0}
    later = T0 + timedelta(minutes=1)
    assert (await sql_store.schedule_states(["beat"], later))["beat"].since == T0  # seen already
    await sql_store.record_fired("beat", T0 + timedelta(seconds=5), "job-5", later)
    await sql_store.record_fired("beat", T0 + timedelta(seconds=3), "job-3", later)  # never back
    beat = (await sql_store.schedule_states(["beat"], later))["beat"]
    assert (beat.last_due, beat.last_job_id) == (T0 + timedelta(seconds=5), "job-5")
    assert beat.fires_after() == T0 + timedelta(seconds=5)
    paused = await sql_store.pause_schedule("beat", later)
    again = await sql_store.pause_schedule("beat", later + timedelta(hours=1))
    assert paused.paused_at == again.paused_at == later  # the first pause counts
    resumed = await sql_store.resume_schedule("beat", later + timedelta(hours=2))
    assert (resumed.paused_at, resumed.since) == (None, later + timedelta(hours=2))
    untouched = await sql_store.resume_schedule("nightly", later)  # not paused: nothing moves
    assert untouched.since == T0


@pytest.mark.rabbitmq
async def test_a_paused_schedule_fires_nothing_and_resumes_without_catching_up(
    vhost, tmp_path: Path
):
    topology = compiled(TOPOLOGY)
    await apply_topology(topology, vhost)
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    publisher = await ConfirmedPublisher.connect(vhost, topology)
    leadership = Leadership(vhost, topology.scheduler_queue, lease=0.5)
    await leadership.start()
    clock = compressed(datetime.now(UTC).timestamp(), 20.0)  # 20 occurrences a second
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore())
    metrics = SchedulerMetrics()
    stop = asyncio.Event()
    scheduler = Scheduler(submitter, leadership, clock=clock, metrics=metrics)
    running = asyncio.create_task(scheduler.run(stop))

    async def dues() -> list[datetime]:
        page = await store.list_jobs(JobSearch(correlation_id="schedule:beat", limit=500))
        keys = [job.idempotency_key or "" for job in page.jobs]
        return sorted(datetime.fromisoformat(key.partition("@")[2]) for key in keys)

    async def fired(count: int) -> bool:
        return len(await dues()) >= count

    try:
        await eventually(lambda: fired(10), within=10, every=0.05)
        await store.pause_schedule("beat", clock.now())
        await asyncio.sleep(0.2)  # the loop sees the pause within a nap
        held = len(await dues())
        await asyncio.sleep(0.75)  # 15 s of the clock: 15 occurrences fall due meanwhile
        assert len(await dues()) == held
        resumed = await store.resume_schedule("beat", clock.now())
        await eventually(lambda: fired(held + 5), within=10, every=0.05)
    finally:
        stop.set()
        await running
        await leadership.stop()
        await publisher.close()
    fired_dues = await dues()
    before, after = fired_dues[:held], fired_dues[held:]
    assert after[0] > resumed.since  # nothing of the paused span fired on resume
    assert (after[0] - before[-1]).total_seconds() >= 15
    assert metrics.runs.labels("beat", "fired")._value.get() == len(fired_dues)
    nightly = (await store.schedule_states(["nightly"], clock.now()))["nightly"]
    assert nightly.last_due is None  # its first occurrence is still ahead
    await store.close()


async def test_the_api_lists_schedules_and_only_an_admin_pauses_one():
    api = make_api(compiled(TOPOLOGY))
    listed = (await api.client.get("/schedules")).json()
    assert [s["name"] for s in listed] == ["beat", "nightly"]
    nightly = listed[1]
    assert (nightly["rule"], nightly["paused"], nightly["last_run"]) == (
        "0 3 * * * (Europe/Paris)",
        False,
        None,
    )
    assert nightly["next_run"].endswith(":00:00Z")
    reader = await issue_key(api.store, scopes=(Scope.JOBS_READ,))
    refused = await api.client.post("/schedules/beat/pause", json={}, headers=bearer(reader))
    assert refused.status_code == 403
    paused = await api.client.post("/schedules/beat/pause", json={})
    assert paused.status_code == 200
    assert (paused.json()["paused"], paused.json()["next_run"]) == (True, None)
    assert (await api.client.post("/schedules/nope/pause", json={})).status_code == 404
    resumed = (await api.client.post("/schedules/beat/resume", json={})).json()
    assert resumed["paused"] is False
    other = await issue_key(api.store, tenant="acme")
    assert (await api.client.get("/schedules", headers=bearer(other))).json() == []
    assert (
        await api.client.post("/schedules/beat/pause", json={}, headers=bearer(other))
    ).status_code == 404


def test_taskctl_lists_pauses_and_resumes_schedules(tmp_path: Path):
    env = {
        "TASKQ_TOPOLOGY": str(write_topology(tmp_path, TOPOLOGY)),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    shown = runner.invoke(app, ["schedules"], env=env)
    assert shown.exit_code == 0, shown.output
    rows = {row["NAME"]: row for row in table_rows(shown.output)}
    assert rows["beat"]["STATE"] == "active"
    assert rows["nightly"]["RULE"] == "0 3 * * * (Europe/Paris)"
    paused = runner.invoke(app, ["schedules", "pause", "beat"], env=env)
    assert paused.output.strip() == "schedule beat: paused"
    listed = json.loads(runner.invoke(app, ["schedules", "--json"], env=env).output)
    assert [s["paused"] for s in listed] == [True, False]
    resumed = runner.invoke(app, ["schedules", "resume", "beat", "--json"], env=env)
    assert json.loads(resumed.output)["paused"] is False
    unknown = runner.invoke(app, ["schedules", "pause", "nope"], env=env)
    assert unknown.exit_code == 1
    assert "no schedule named 'nope'; schedules: beat, nightly" in unknown.output

"""Three scheduler replicas, the leader killed and restarted, then another: each occurrence fires exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobstore.model import JobSearch, open_store
from producers.submit import JobRequest, Submitter
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.helpers import compiled, eventually
from tests.workflows.conftest import env_on_store
from topology.names import SCHEDULE_SOURCE
from topology.schedules import occurrence_key
from topology.settings import BrokerSettings, load_settings

pytestmark = pytest.mark.rabbitmq

TOPOLOGY = """
groups:
  periodic:
    jobs: ["sched.#"]
schedules:
  tick: {every: 1s, job: sched.tick, misfire: all}
  second: {cron: "* * * * * *", timezone: Europe/Paris, job: sched.second, misfire: all}
"""
SPEED = 10.0  # simulated seconds per wall-clock second
# Wall-clock seconds the replicas run: 6 s is 60 once-a-second occurrences of each schedule;
# TASKQ_TEST_SCHEDULER_SECONDS=60 makes it the ten minutes of the soak.
SECONDS = float(os.environ.get("TASKQ_TEST_SCHEDULER_SECONDS", "6"))
LEADS = re.compile(r"scheduler (scheduler-[0-9a-f]{8}) leads")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def env(
    request: pytest.FixtureRequest, vhost: BrokerSettings, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    async with env_on_store(request, vhost, tmp_path, TOPOLOGY, **replicas_env()) as env:
        yield env


def replicas_env(**more: str) -> dict[str, str]:
    """Return the variables of replicas on the compressed clock, starting now, and ``more``."""
    return {
        "TASKQ_SCHEDULER_LEASE": "0.6",
        "TASKQ_TEST_CLOCK_START": str(time.time()),
        "TASKQ_TEST_CLOCK_SPEED": str(SPEED),
        **more,
    }


class Replicas:
    """Scheduler replica processes, each logging to a file of its own."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, index: int) -> None:
        with (self.logs / f"replica{index}.log").open("ab") as out:
            self.processes[index] = subprocess.Popen(
                [sys.executable, "-m", "tests.schedules.compressed_scheduler"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def leaders(self) -> list[tuple[int, str]]:
        """Return (replica, scheduler name) of each "leads" line, in the order of each log."""
        found = []
        for index in self.processes:
            text = (self.logs / f"replica{index}.log").read_text(errors="replace")
            found += [(index, name) for name in LEADS.findall(text)]
        return found

    def sole_leader(self) -> int:
        """Return the replica that leads: until a first fail-over, the only one that ever led."""
        led = {index for index, _ in self.leaders()}
        assert len(led) == 1, led
        return led.pop()

    def kill(self, index: int) -> None:
        process = self.processes[index]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def fired(store_url: str, schedule: str) -> list[datetime]:
    """Return the due time of each job the schedule made, as its idempotency key names it."""
    store = open_store(store_url)
    dues, cursor = [], None
    try:
        while True:
            search = JobSearch(correlation_id=f"schedule:{schedule}", limit=500, cursor=cursor)
            page = await store.list_jobs(search)
            for job in page.jobs:
                assert job.idempotency_key is not None
                name, _, due = job.idempotency_key.partition("@")
                assert name == schedule
                dues.append(datetime.fromisoformat(due))
            cursor = page.next_cursor
            if cursor is None:
                return dues
    finally:
        await store.close()


async def test_every_occurrence_fires_exactly_once_while_replicas_die(
    env: dict[str, str], tmp_path: Path
):
    rng = random.Random(7)
    replicas = Replicas(env, tmp_path)
    try:
        for index in range(3):
            replicas.start(index)

        async def someone_leads() -> bool:
            return bool(replicas.leaders())

        await eventually(someone_leads, within=20, every=0.1)
        began = time.monotonic()
        await asyncio.sleep(SECONDS / 3)
        leader = replicas.sole_leader()
        replicas.kill(leader)  # the one firing dies: another takes over within a lease
        await asyncio.sleep(0.5)
        replicas.start(leader)
        await asyncio.sleep(SECONDS / 3)
        victim = rng.randrange(3)  # then one at random, the leader or not
        replicas.kill(victim)
        await asyncio.sleep(0.5)
        replicas.start(victim)
        await asyncio.sleep(max(0.0, SECONDS - (time.monotonic() - began)))

        async def caught_up() -> bool:
            # The leader may trail the compressed clock after a fail-over: a busy machine, or
            # a replica killed between storing an occurrence and its confirm, whose key holds
            # the schedule until the repair sweep publishes that job (TASKQ_REPAIR_AFTER, 30
            # s). With misfire "all" it then fires what it missed, which is what this waits for.
            for schedule in ("tick", "second"):
                if len(await fired(env["TASKQ_STORE_URL"], schedule)) < SECONDS * SPEED * 0.8:
                    return False
            return True

        try:
            await eventually(caught_up, within=60, every=0.5)
        except TimeoutError:
            counts = {s: len(await fired(env["TASKQ_STORE_URL"], s)) for s in ("tick", "second")}
            raise AssertionError(f"fired {counts}, leaders {replicas.leaders()}") from None
    finally:
        replicas.stop()
    names = {name for _, name in replicas.leaders()}
    assert len(names) >= 2  # leadership moved at least once
    for schedule in ("tick", "second"):
        dues = await fired(env["TASKQ_STORE_URL"], schedule)
        repeated = [due for due, n in Counter(dues).items() if n > 1]
        assert repeated == []  # no occurrence fired twice
        first, last = min(dues), max(dues)
        expected = int((last - first).total_seconds()) + 1
        missing = {first + timedelta(seconds=s) for s in range(expected)} - set(dues)
        assert sorted(missing) == []  # none skipped, through both kills
        assert len(dues) >= SECONDS * SPEED * 0.8
        print(f"{schedule}: {len(dues)} occurrences, each once, {len(names)} leaders")


@pytest.fixture(params=["sqlite"])
async def short_leases(
    request: pytest.FixtureRequest, vhost: BrokerSettings, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """The environment of replicas on SQLite, with a key lease short enough to lapse in a test."""
    more = replicas_env(TASKQ_IDEMPOTENCY_LEASE="6", TASKQ_REPAIR_AFTER="1")
    async with env_on_store(request, vhost, tmp_path, TOPOLOGY, **more) as env:
        yield env


async def test_an_occurrence_a_dead_replica_stored_fires_once_and_the_next_leader_moves_on(
    short_leases: dict[str, str], tmp_path: Path
):
    # A replica that stored an occurrence's job and died before its confirm leaves the
    # occurrence's key held. The replica leading next must publish that job and replay it,
    # not wait for the key's lease to lapse and then fire the occurrence a second time.
    env = short_leases
    topology = compiled(TOPOLOGY)
    spec = dict(topology.schedules)["tick"]
    start = float(env["TASKQ_TEST_CLOCK_START"])
    due = datetime.fromtimestamp(int(start) + 40, UTC)  # 4 s of the wall clock ahead
    request = JobRequest(
        type=spec.job,
        payload=spec.payload,
        priority=spec.priority,
        max_attempts=spec.max_attempts,
        idempotency_key=occurrence_key("tick", due),
        correlation_id="schedule:tick",
        source=SCHEDULE_SOURCE,
        tenant=spec.tenant,
    )
    store = open_store(env["TASKQ_STORE_URL"])
    await store.migrate()
    settings = load_settings(env)
    dead = Submitter(
        topology, InMemoryPublisher(topology), store, InMemoryBlobStore(), settings.submit
    )
    prepared = await dead._prepare(request, dead.clock(), None)
    await store.create_jobs([replace(dead._new_job(prepared), confirm_within=0)])
    await store.close()

    replicas = Replicas(env, tmp_path)
    try:
        replicas.start(0)

        async def moved_on() -> bool:
            later = [d for d in await fired(env["TASKQ_STORE_URL"], "tick") if d > due]
            return len(later) >= 20

        await eventually(moved_on, within=15, every=0.2)
    finally:
        replicas.stop()
    dues = await fired(env["TASKQ_STORE_URL"], "tick")
    assert dues.count(due) == 1
    store = open_store(env["TASKQ_STORE_URL"])
    try:
        page = await store.list_jobs(JobSearch(correlation_id="schedule:tick", limit=500))
    finally:
        await store.close()
    [job] = [j for j in page.jobs if j.idempotency_key == occurrence_key("tick", due)]
    assert job.id == prepared.job.id  # the dead replica's job, published by the next one

"""Workflows end to end: real broker, real stores, worker processes killed and connections cut."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from producers.backends import confirmed, open_producer
from producers.client import AsyncClient
from producers.workflows import chain, chord, step
from tests.broker import TestsManagementClient
from tests.faults.conftest import worker
from tests.helpers import eventually
from tests.producers.test_api_stack import amqp_reachable, rabbitmqctl
from tests.workflows.conftest import env_on_store
from topology.settings import BrokerSettings, load_settings

pytestmark = pytest.mark.rabbitmq

TOPOLOGY = """
delays: {resolution: 250ms, longest: 1m}
groups:
  flows:
    jobs: ["flow.#"]
    prefetch: 64
    concurrency: 32
    timeout: 2s
    retry: {max_attempts: 3, base: 250ms, factor: 2, max: 1s, jitter: none}
"""
MEMBERS = int(os.environ.get("TASKQ_TEST_CHORD_MEMBERS", "200"))
STEPS = int(os.environ.get("TASKQ_TEST_CHAIN_STEPS", "20"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def env(
    request: pytest.FixtureRequest, vhost: BrokerSettings, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    more = {
        "TASKQ_HANDLERS": "tests.workflows.flow_handlers",
        "TASKQ_TEST_SINK": str(tmp_path / "sink.txt"),
        "TASKQ_REPAIR_AFTER": "1",
        "TASKQ_RECONNECT_INTERVAL": "0.2",
        "TASKQ_GRACE": "5",
    }
    async with env_on_store(request, vhost, tmp_path, TOPOLOGY, **more) as env:
        yield env


@asynccontextmanager
async def repairing(env: dict[str, str]) -> AsyncIterator[None]:
    """Run the repair sweep the API process runs: it publishes steps whose worker died first."""
    producer = await open_producer(load_settings(env), confirmed("test repair"))
    sweeps = asyncio.create_task(producer.submitter.keep_repairing())
    try:
        yield
    finally:
        sweeps.cancel()
        await asyncio.gather(sweeps, return_exceptions=True)
        await producer.close()


def sink(env: dict[str, str]) -> list[str]:
    path = Path(env["TASKQ_TEST_SINK"])
    return path.read_text().splitlines() if path.exists() else []


async def test_a_chord_fires_its_callback_once_with_every_result_through_failures_and_a_kill(
    env: dict[str, str], tmp_path: Path
):
    rng = random.Random(21)
    flaky = set(rng.sample(range(MEMBERS), MEMBERS // 10))
    dying = set(rng.sample(sorted(set(range(MEMBERS)) - flaky), 3))
    members = [
        step("flow.member", {"n": n, "flaky": n in flaky, "die": n in dying, "sleep": 0.05})
        for n in range(MEMBERS)
    ]
    began = time.monotonic()
    async with repairing(env), await AsyncClient.connect(env) as client:
        with (
            worker(env, tmp_path / "w1.log", "flows") as first,
            worker(env, tmp_path / "w2.log", "flows"),
        ):
            submitted = await client.submit_workflow(
                chord(members, step("flow.merge"), on_failure="continue")
            )

            async def a_third_ran() -> bool:
                return len(sink(env)) >= MEMBERS // 3

            await eventually(a_third_ran, within=30, every=0.02)
            first.send_signal(signal.SIGKILL)  # mid-chord: its jobs in hand come back
            ran_before = len(sink(env))
            with worker(env, tmp_path / "w3.log", "flows"):

                async def ended() -> bool:
                    view = await client.workflow(submitted["id"])
                    return view["status"] != "running"

                await eventually(ended, within=45, every=0.2)
                view = await client.workflow(submitted["id"])
    took = time.monotonic() - began
    print(f"chord of {MEMBERS} members: {took:.1f}s through a SIGKILL")
    assert ran_before < MEMBERS * 2 // 3  # the kill came with work left, some of it in its hands
    merges = [line for line in sink(env) if line.startswith("merge")]
    assert merges == [f"merge {view['steps'][-1]['job_id']} {MEMBERS}"]  # once, with every result
    assert view["status"] == "succeeded", view["error"]
    assert (view["pending"], view["failed"]) == (0, len(dying))
    callback = view["steps"][-1]["job"]
    expected = sum(2 * n for n in range(MEMBERS) if n not in dying)
    assert callback["result"] == {"sum": expected, "members": MEMBERS}
    assert callback["status"] == "succeeded"
    statuses = Counter(s["job"]["status"] for s in view["steps"][:-1])
    assert statuses == Counter({"succeeded": MEMBERS - len(dying), "dead": len(dying)})
    flaky_attempts = {view["steps"][n]["job"]["attempts"] for n in flaky}
    assert flaky_attempts == {2}  # each injected failure was retried once, then succeeded


async def test_a_chain_survives_the_broker_dropping_every_connection(
    env: dict[str, str], tmp_path: Path, management: TestsManagementClient
):
    vhost = load_settings(env).broker.vhost

    async def cut(listed: list[dict]) -> None:
        for connection in listed:
            await management.close_connection(connection["name"], reason="test: cut the link")

    await chain_through(env, tmp_path, management, vhost, cut)


@pytest.mark.broker_admin
@pytest.mark.parametrize(
    "env", ["sqlite"], indirect=True
)  # the restart is the broker's, not the store's
async def test_a_chain_survives_a_broker_restart(
    env: dict[str, str], tmp_path: Path, management: TestsManagementClient
):
    broker = load_settings(env).broker

    async def restart(_: list[dict]) -> None:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(1)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        await eventually(lambda: amqp_reachable(broker), within=60)

    await chain_through(env, tmp_path, management, broker.vhost, restart)


async def chain_through(
    env: dict[str, str],
    tmp_path: Path,
    management: TestsManagementClient,
    vhost: str,
    fault: Callable[[list[dict]], Awaitable[None]],
) -> None:
    """Run a chain of ``STEPS`` steps, ``fault`` striking a third of the way; check it ran whole, once."""
    async with repairing(env), await AsyncClient.connect(env) as client:
        with worker(env, tmp_path / "w.log", "flows"):
            # The worker's two, the client's and the repair sweep's, once the broker lists them.
            listed: list[dict] = []

            async def all_listed() -> bool:
                listed[:] = await management.connections(vhost)
                return len(listed) >= 4

            await eventually(all_listed, within=15, every=0.2)
            submitted = await client.submit_workflow(
                chain(*(step("flow.add", {"sleep": 0.1}) for _ in range(STEPS)))
            )

            async def a_third_ran() -> bool:
                return len(sink(env)) >= STEPS // 3

            await eventually(a_third_ran, within=30, every=0.05)
            before = len(sink(env))
            await fault(listed)

            async def ended() -> bool:
                try:
                    view = await client.workflow(submitted["id"])
                except Exception:
                    return False
                return view["status"] != "running"

            await eventually(ended, within=60, every=0.2)
            view = await client.workflow(submitted["id"])
    assert before < STEPS  # the fault struck mid-chain
    assert view["status"] == "succeeded", view["error"]
    assert view["steps"][-1]["job"]["result"] == STEPS  # each step got the one before's result
    runs = Counter(line.split()[1] for line in sink(env))
    assert len(runs) == STEPS
    assert set(runs.values()) == {1}

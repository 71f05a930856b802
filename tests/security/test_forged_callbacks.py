"""Forged callbacks: a signed callback goes only to the ``callback_url`` of the job it names.

Clients can no longer submit ``taskq.callback`` (see test_reserved_types); a callback job
that reaches the queue some other way (published to the broker directly, or left there from
before) is dead-lettered unsent unless the job it names holds that very URL.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from consumers.dlq import DeadFilter, listing
from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import JobStatus
from producers.backends import confirmed, open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from tests.helpers import eventually
from tests.security.stack import SIGNING_KEY, Stack
from topology.broker import connect
from topology.envelope import Envelope
from topology.names import CALLBACK_JOB_TYPE
from topology.settings import WorkerSettings, load_settings
from webhooks.callbacks import CallbackDelivery, endpoint_secret
from webhooks.schemes.standard import StandardVerifier

pytestmark = pytest.mark.rabbitmq


@dataclass
class Receiver:
    url: str = ""
    hits: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(autouse=True)
def callback_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_CALLBACK_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("TASKQ_CALLBACK_ALLOW", "127.0.0.1")


async def start_receiver() -> tuple[Receiver, web.AppRunner]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        state.hits.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook"
    return state, runner


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    owner, owner_runner = await start_receiver()
    thief, thief_runner = await start_receiver()
    try:
        yield owner, thief
    finally:
        await owner_runner.cleanup()
        await thief_runner.cleanup()


@pytest.fixture
async def workers(api_stack: Stack) -> AsyncIterator[ConfirmedPublisher]:
    """Run the work and callbacks groups' workers on the stack's broker and store."""
    settings = load_settings({**os.environ, **api_stack.env})
    backends = await open_backends(settings)
    publisher = await confirmed("test")(backends)
    submitter = Submitter(backends.topology, publisher, backends.store, backends.blobs)
    registry = HandlerRegistry()

    @registry.handler("work.#")
    async def work(payload: object, ctx: JobContext) -> str:
        return "worked"

    delivery = CallbackDelivery(settings.callbacks)
    delivery.register(registry)
    running = []
    for name in ("work", "callbacks"):
        deps = Deps(
            backends.topology,
            backends.topology.group(name),
            registry,
            backends.store,
            backends.blobs,
            publisher,
            WorkerSettings(grace=5),
            submitter,
        )
        worker = Worker(deps)
        await worker.start(settings.broker)
        running.append(worker)
    try:
        yield publisher
    finally:
        for worker in running:
            await worker.stop(grace=2)
        await publisher.close()
        await backends.close()
        await delivery.close()


async def test_a_forged_callback_job_is_dead_lettered_unsent(
    api_stack: Stack, workers: ConfirmedPublisher, receivers: tuple[Receiver, Receiver]
):
    owner, thief = receivers
    submitted = await api_stack.client.post(
        "/jobs", json={"type": "work.a", "callback_url": owner.url}
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    async def announced() -> bool:
        return len(owner.hits) == 1

    await eventually(announced, within=20, every=0.05)
    headers, body = owner.hits[0]
    verifier = StandardVerifier([endpoint_secret(SIGNING_KEY, owner.url)])
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verifier.verify(body, lowered, time.time()).event == "job.succeeded"

    # The forgeries: the real job's id with another URL, and a job nobody submitted.
    for forged in (
        {"url": thief.url, "event": "job.succeeded", "job": {"id": job_id, "result": "x"}},
        {"url": thief.url, "event": "job.succeeded", "job": {"id": "01NOSUCHJOB"}},
    ):
        await workers.publish(Envelope.new(CALLBACK_JOB_TYPE, forged))

    async def dead_lettered() -> bool:
        return (await api_stack.depths())["taskq.callbacks.dlq"] == 2

    await eventually(dead_lettered, within=20, every=0.05)
    assert thief.hits == []
    assert len(owner.hits) == 1
    async with await connect(api_stack.broker, name="dlq check") as connection:
        page = await listing(connection, api_stack.topology.group("callbacks"), DeadFilter())
    errors = sorted(letter.error for letter in page.letters)
    assert errors == [
        f"Permanent: refused: {thief.url} is not the callback_url of job {job_id}",
        "Permanent: refused: the callback names job '01NOSUCHJOB', which is not in the store",
    ]
    # Nothing else moved: the real job and its one callback are done, and stored as such.
    stored = {job.type: job.status for job in await api_stack.jobs()}
    assert stored == {"work.a": JobStatus.SUCCEEDED, CALLBACK_JOB_TYPE: JobStatus.SUCCEEDED}
    assert await api_stack.occupied() == {"taskq.callbacks.dlq": 2}

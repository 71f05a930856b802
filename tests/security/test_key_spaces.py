"""Keys a caller chooses never meet keys taskq uses: webhook deliveries and callbacks.

Submission idempotency keys are scoped by tenant and source in the store, so a caller who
sends ``Idempotency-Key: webhook:github:<id>`` or ``callback:<job>:succeeded`` gets a job of
its own, and neither suppresses the real delivery's job, nor the callback, nor makes a
finished job's message requeue forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from consumers.handlers import HandlerRegistry
from consumers.worker import Deps, Worker
from jobstore.blobs import open_blob_store
from jobstore.model import JobStatus
from producers.submit import JobRequest
from tests.broker import channel, depth
from tests.helpers import eventually
from tests.security.conftest import GITHUB_SECRET, Door
from tests.webhooks.signing import sign_github
from topology.settings import WorkerSettings

pytestmark = pytest.mark.rabbitmq

PUBLIC_HOOK = "https://93.184.215.14/hook"  # an address literal: no DNS in the test


async def test_a_crafted_webhook_key_does_not_claim_the_delivery(door: Door) -> None:
    delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    async with door.client(await door.key()) as caller:
        crafted = await caller.post(
            "/jobs",
            json={"type": "job.x", "delay": 600},
            headers={"Idempotency-Key": f"webhook:github:{delivery}"},
        )
        assert crafted.status_code == 202
        body = orjson.dumps({"ref": "refs/heads/main"})
        hook = await caller.post(
            "/webhooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), body),
            },
        )
    assert hook.status_code == 202, hook.text
    assert "idempotent-replayed" not in hook.headers
    assert hook.json()["id"] != crafted.json()["id"]
    jobs = {job.id: job for job in await door.stored()}
    assert jobs[hook.json()["id"]].type == "github.push"
    assert jobs[crafted.json()["id"]].type == "job.x"
    assert (await door.published()).get("taskq.github") == 1  # the delivery's job is on its way


@pytest.fixture
async def email_worker(door: Door) -> AsyncIterator[list[str]]:
    """Run the email group's worker on the door's store; yield the ids of the jobs it ran."""
    runs: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("email")
    async def send(payload: object, ctx) -> str:
        runs.append(ctx.job_id)
        return "sent"

    blobs = open_blob_store(door.env["TASKQ_BLOB_URL"])
    assert door.services.publisher is not None
    deps = Deps(
        door.topology,
        door.topology.group("email"),
        registry,
        door.store,
        blobs,
        door.services.publisher,
        WorkerSettings(grace=5),
        submitter=door.services.submitter,
    )
    worker = Worker(deps)
    await worker.start(door.broker)
    try:
        yield runs
    finally:
        await worker.stop(grace=2)
        await blobs.close()


async def test_a_crafted_callback_key_neither_suppresses_the_callback_nor_loops_the_job(
    door: Door, email_worker: list[str]
) -> None:
    async with door.client(await door.key()) as caller:
        job = await caller.post(
            "/jobs", json={"type": "email", "delay": 1, "callback_url": PUBLIC_HOOK}
        )
        job_id = job.json()["id"]
        # Claimed before the job ends: the very key its callback will be submitted under.
        crafted = await caller.post(
            "/jobs",
            json={"type": "job.x", "delay": 600},
            headers={"Idempotency-Key": f"callback:{job_id}:succeeded"},
        )
        assert crafted.status_code == 202

    async def callback_enqueued() -> bool:
        async with channel(door.broker) as ch:
            return await depth(ch, "taskq.callbacks") == 1

    await eventually(callback_enqueued, within=20)
    stored = await door.store.get_job(job_id)
    assert stored is not None
    assert stored.status is JobStatus.SUCCEEDED
    assert email_worker == [job_id]  # ran once; its message was acked, not requeued
    callbacks = [j for j in await door.stored() if j.type == "taskq.callback"]
    assert len(callbacks) == 1
    assert callbacks[0].payload["job"]["id"] == job_id
    assert callbacks[0].tenant == "default"
    # Announcing the same end again (a redelivery) enqueues nothing new.
    await door.services.submitter.follow_up(stored)
    async with channel(door.broker) as ch:
        assert await depth(ch, "taskq.callbacks") == 1
        assert await depth(ch, "taskq.email") == 0


async def test_client_and_api_keys_live_apart(door: Door) -> None:
    async with door.client(await door.key()) as caller:
        api = await caller.post(
            "/jobs", json={"type": "email", "delay": 600}, headers={"Idempotency-Key": "k-1"}
        )
    # The Python client's door: same tenant, same key, another source.
    client = await door.services.submitter.submit(
        JobRequest(type="job.x", delay=600, idempotency_key="k-1", source="client")
    )
    assert not client.replayed
    assert client.job_id != api.json()["id"]
    assert len(await door.stored()) == 2

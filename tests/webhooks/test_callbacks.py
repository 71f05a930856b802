"""Signed job callbacks on the real broker: delivered once, retried on failure, SSRF refused."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import JobSearch, JobStatus
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from producers.tenancy import Viewer
from tests.broker import channel, depth
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.store import InMemoryJobStore
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import parse_topology
from topology.names import CALLBACK_JOB_TYPE
from topology.settings import BrokerSettings, WorkerSettings, load_settings
from webhooks.callbacks import CallbackDelivery, endpoint_secret, registration_check
from webhooks.outbound.addresses import AllowList
from webhooks.schemes.standard import StandardVerifier

pytestmark = pytest.mark.rabbitmq

KEY = "callback-master-key"
TOPOLOGY = compile_topology(
    parse_topology(
        """
        delays: {resolution: 250ms, longest: 1m}
        groups:
          work: {jobs: ["work.#"], timeout: 5s}
          callbacks:
            jobs: [taskq.callback]
            timeout: 5s
            retry: {max_attempts: 3, base: 250ms, factor: 2, max: 2s, jitter: none}
        """
    )
)


@dataclass
class Receiver:
    url: str
    answer: int = 200
    hits: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)


@dataclass
class Pipeline:
    submitter: Submitter
    store: InMemoryJobStore
    receiver: Receiver
    broker: BrokerSettings
    delivery: CallbackDelivery

    async def final(self, job_id: str, within: float = 20) -> JobStatus:
        async def ended() -> bool:
            job = await self.store.get_job(job_id)
            return job is not None and job.status.terminal

        await eventually(ended, within=within, every=0.05)
        job = await self.store.get_job(job_id)
        assert job is not None
        return job.status

    async def callback_job(self, job_id: str):
        """Return the callback jobs of ``job_id``, once there is one (enqueued just after the end)."""
        found = []

        async def enqueued() -> bool:
            jobs = (await self.store.list_jobs(JobSearch(type=CALLBACK_JOB_TYPE, limit=100))).jobs
            found[:] = [j for j in jobs if j.payload["job"]["id"] == job_id]
            return bool(found)

        await eventually(enqueued, within=10, every=0.05)
        return found


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        server.hits.append((time.monotonic(), dict(request.headers), await request.read()))
        return web.Response(status=server.answer)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def pipeline(vhost, receiver, monkeypatch) -> AsyncIterator[Pipeline]:
    monkeypatch.setenv("TASKQ_CALLBACK_SIGNING_KEY", KEY)
    monkeypatch.setenv("TASKQ_CALLBACK_ALLOW", "127.0.0.1")
    await apply_topology(TOPOLOGY, vhost)
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    publisher = await ConfirmedPublisher.connect(vhost, TOPOLOGY)
    submitter = Submitter(TOPOLOGY, publisher, store, blobs)
    registry = HandlerRegistry()

    @registry.handler("work.#")
    async def work(payload: object, ctx: JobContext) -> str:
        return "worked"

    delivery = CallbackDelivery(load_settings().callbacks)
    delivery.register(registry)
    settings = WorkerSettings(grace=5)
    workers = []
    for name in ("work", "callbacks"):
        deps = Deps(
            TOPOLOGY, TOPOLOGY.group(name), registry, store, blobs, publisher, settings, submitter
        )
        worker = Worker(deps)
        await worker.start(vhost)
        workers.append(worker)
    try:
        yield Pipeline(submitter, store, receiver, vhost, delivery)
    finally:
        for worker in workers:
            await worker.stop(grace=2)
        await publisher.close()
        await delivery.close()


async def test_a_finished_job_gets_one_correctly_signed_callback(pipeline: Pipeline):
    url = pipeline.receiver.url
    job = await pipeline.submitter.submit(JobRequest(type="work.x", payload={}, callback_url=url))
    assert await pipeline.final(job.job_id) is JobStatus.SUCCEEDED

    async def delivered() -> bool:
        return len(pipeline.receiver.hits) == 1

    await eventually(delivered, within=10)
    _, headers, body = pipeline.receiver.hits[0]
    verifier = StandardVerifier([endpoint_secret(KEY, url)])
    delivery = verifier.verify(body, {k.lower(): v for k, v in headers.items()}, time.time())
    assert delivery.delivery_id == f"cb_{job.job_id}_succeeded"
    assert delivery.event == "job.succeeded"
    (callback,) = await pipeline.callback_job(job.job_id)
    assert await pipeline.final(callback.id) is JobStatus.SUCCEEDED
    assert len(pipeline.receiver.hits) == 1  # once, however the acks went


async def test_a_cancelled_job_is_announced_too(pipeline: Pipeline):
    job = await pipeline.submitter.submit(
        JobRequest(type="work.x", delay=60, callback_url=pipeline.receiver.url)
    )
    await pipeline.submitter.cancel(job.job_id, Viewer())

    async def delivered() -> bool:
        return len(pipeline.receiver.hits) == 1

    await eventually(delivered, within=10)
    assert b'"type":"job.cancelled"' in pipeline.receiver.hits[0][2]


async def test_a_failing_receiver_gets_retries_on_the_backoff_schedule_then_the_dlq(
    pipeline: Pipeline,
):
    pipeline.receiver.answer = 500
    job = await pipeline.submitter.submit(
        JobRequest(type="work.x", payload={}, callback_url=pipeline.receiver.url)
    )
    assert await pipeline.final(job.job_id) is JobStatus.SUCCEEDED
    (callback,) = await pipeline.callback_job(job.job_id)
    assert await pipeline.final(callback.id) is JobStatus.DEAD
    times = [at for at, _, _ in pipeline.receiver.hits]
    assert len(times) == 3  # max_attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.25 - 0.05, gaps  # base 250ms, then doubled (jitter none)
    assert gaps[1] >= 0.5 - 0.05, gaps
    async with channel(pipeline.broker) as ch:
        assert await depth(ch, "taskq.callbacks.dlq") == 1


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:{port}/hook",
    ],
)
async def test_ssrf_targets_are_refused_and_dead_lettered_without_a_request(
    pipeline: Pipeline, monkeypatch, target: str
):
    pipeline.delivery.allow = AllowList.parse("")  # nothing allow-listed: loopback is refused
    await pipeline.delivery.close()  # the next delivery opens a session on the new list
    port = pipeline.receiver.url.split(":")[2].split("/")[0]
    job = await pipeline.submitter.submit(
        JobRequest(type="work.x", payload={}, callback_url=target.format(port=port))
    )
    assert await pipeline.final(job.job_id) is JobStatus.SUCCEEDED
    (callback,) = await pipeline.callback_job(job.job_id)
    assert await pipeline.final(callback.id) is JobStatus.DEAD
    dead = await pipeline.store.get_job(callback.id)
    assert dead is not None
    assert "refused" in (dead.last_error or "").lower(), dead.last_error
    assert dead.attempts <= 1  # permanent: no retries spent on it
    assert pipeline.receiver.hits == []


async def test_a_group_callback_url_applies_to_jobs_that_name_none():
    from tests.fakes.publisher import InMemoryPublisher

    topology = compile_topology(
        parse_topology(
            """
            groups:
              reported: {jobs: ["reported.#"], callback_url: "https://hooks.example.com/taskq"}
              quiet: {jobs: ["quiet.#"]}
            """
        )
    )
    store = InMemoryJobStore()
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    by_group = await submitter.submit(JobRequest(type="reported.x"))
    own = await submitter.submit(
        JobRequest(type="reported.x", callback_url="https://mine.example/")
    )
    none = await submitter.submit(JobRequest(type="quiet.x"))
    await submitter.settle()
    urls = [(await store.get_job(s.job_id)).callback_url for s in (by_group, own, none)]  # type: ignore[union-attr]
    assert urls == ["https://hooks.example.com/taskq", "https://mine.example/", None]


async def test_callback_urls_are_checked_for_ssrf_when_the_job_is_submitted(monkeypatch):
    from tests.fakes.publisher import InMemoryPublisher
    from topology.errors import JobRejectedError

    monkeypatch.setenv("TASKQ_CALLBACK_ALLOW", "")
    store = InMemoryJobStore()
    submitter = Submitter(TOPOLOGY, InMemoryPublisher(TOPOLOGY), store, InMemoryBlobStore())
    submitter.callback_check = registration_check(load_settings().callbacks)
    for url in (
        "http://169.254.169.254/latest",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://2130706433/",
    ):
        with pytest.raises(JobRejectedError) as refused:
            await submitter.submit(JobRequest(type="work.x", callback_url=url))
        assert refused.value.field == "callback_url"
    assert (await store.list_jobs()).jobs == []
    monkeypatch.setenv("TASKQ_CALLBACK_ALLOW", "127.0.0.1")
    submitter.callback_check = registration_check(load_settings().callbacks)
    assert await submitter.submit(JobRequest(type="work.x", callback_url="http://127.0.0.1:8080/"))

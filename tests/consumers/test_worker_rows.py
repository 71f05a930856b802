"""A job's message can overtake its row: the worker creates the row, on a real store and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import Claim, Confirmed, JobStatus, NewJob
from jobstore.sqlite import SqliteJobStore
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from tests.consumers.rig import TOPOLOGY
from tests.fakes.blobs import InMemoryBlobStore
from tests.helpers import eventually
from topology.apply import apply_topology
from topology.envelope import Envelope
from topology.errors import StoreUnavailableError
from topology.settings import BrokerSettings, WorkerSettings

pytestmark = pytest.mark.rabbitmq


class FlakyStore(SqliteJobStore):
    """The SQLite store, with the submitter's inserts failing while ``refuse`` is set."""

    refuse = False

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        if self.refuse:
            raise StoreUnavailableError("the disk is full")
        return await super().create_jobs(items, confirmed=confirmed, durable=durable)


@dataclass
class Stack:
    store: FlakyStore
    submitter: Submitter
    publisher: ConfirmedPublisher
    runs: list[str]


@pytest.fixture
async def stack(vhost: BrokerSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    await apply_topology(TOPOLOGY, vhost)
    store = FlakyStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    registry = HandlerRegistry()
    runs: list[str] = []

    @registry.handler("mail.send")
    async def send(payload: dict, ctx: JobContext) -> dict:
        runs.append(ctx.job_id)
        return {"sent": payload["to"]}

    blobs = InMemoryBlobStore()
    publisher = await ConfirmedPublisher.connect(vhost, TOPOLOGY)
    settings = WorkerSettings(grace=5, poison_deliveries=3)
    worker = Worker(
        Deps(TOPOLOGY, TOPOLOGY.group("mail"), registry, store, blobs, publisher, settings)
    )
    await worker.start(vhost)
    try:
        yield Stack(store, Submitter(TOPOLOGY, publisher, store, blobs), publisher, runs)
    finally:
        await worker.stop(grace=2)
        await publisher.close()
        await store.close()


async def finished(stack: Stack, job_id: str) -> None:
    async def done() -> bool:
        job = await stack.store.get_job(job_id)
        return job is not None and job.status is JobStatus.SUCCEEDED

    await eventually(done, within=15, every=0.05)


async def test_a_job_whose_row_does_not_exist_runs_and_its_row_is_written(stack: Stack):
    envelope = Envelope.new("mail.send", {"to": "a@example.com"}, correlation_id="order-7")
    await stack.publisher.publish(envelope)
    await finished(stack, envelope.id)
    job = await stack.store.get_job(envelope.id)
    assert job is not None
    assert (job.result, job.attempts, job.correlation_id) == (
        {"sent": "a@example.com"},
        1,
        "order-7",
    )
    assert (job.payload, job.created_at) == ({"to": "a@example.com"}, envelope.created_at)
    assert stack.runs == [envelope.id]


async def test_a_confirmed_job_whose_insert_failed_is_accepted_and_run(stack: Stack):
    stack.store.refuse = True
    done = await stack.submitter.submit(JobRequest("mail.send", {"to": "b@example.com"}))
    # A keyed job claims its key first: without the store, nothing is published.
    with pytest.raises(StoreUnavailableError):
        await stack.submitter.submit(JobRequest("mail.send", {"to": "c"}, idempotency_key="k"))
    stack.store.refuse = False
    await finished(stack, done.job_id)
    job = await stack.store.get_job(done.job_id)
    assert job is not None
    assert job.result == {"sent": "b@example.com"}
    assert stack.runs == [done.job_id]
    assert await stack.submitter.repair() == 0


async def test_jobs_submitted_while_workers_run_them_end_once_each(stack: Stack):
    ids = [
        (await stack.submitter.submit(JobRequest("mail.send", {"to": f"{n}@example.com"}))).job_id
        for n in range(30)
    ]
    for job_id in ids:
        await finished(stack, job_id)
    assert sorted(stack.runs) == sorted(ids)
    for job_id in ids:
        job = await stack.store.get_job(job_id)
        assert job is not None
        assert job.attempts == 1

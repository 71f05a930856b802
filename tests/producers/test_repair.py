"""Nothing stored stays unpublished: what a failed publish leaves, and the repair sweep, on the real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest

from jobstore.model import JobStatus, JobStore, NewJob, RunStart
from jobstore.sqlite import SqliteJobStore
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from tests.broker import channel, next_message
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from tests.producers.api_harness import make_api
from topology.compiled import CompiledTopology
from topology.envelope import Envelope, decode
from topology.errors import (
    BrokerUnavailableError,
    ConfirmTimeoutError,
    StoreUnavailableError,
    TaskqError,
    UnroutableError,
)
from topology.routes import Route
from topology.settings import BrokerSettings, SubmitSettings

SETTINGS = SubmitSettings(repair_after=3600)


class FailingPublisher(InMemoryPublisher):
    """The in-memory twin of the broker, failing every publish with one error."""

    def __init__(self, topology: CompiledTopology, error: TaskqError) -> None:
        super().__init__(topology)
        self.error = error

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        raise self.error

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        return [self.error] * len(envelopes)


@dataclass
class Rig:
    store: JobStore
    submitter: Submitter
    publisher: ConfirmedPublisher


@pytest.fixture
async def rig(applied: BrokerSettings, topology, tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
        yield Rig(store, submitter, publisher)
        await submitter.close()
    await store.close()


async def drain(settings: BrokerSettings, queue: str, count: int) -> list[Envelope]:
    async with channel(settings) as ch:
        out = []
        for _ in range(count):
            message = await next_message(ch, queue)
            out.append(decode(message.body))
            await message.ack()
        return out


async def stored_but_never_published(rig: Rig, *jobs: JobRequest) -> list[str]:
    """Store jobs as a submitter does, stop before publishing them (a crash), let time pass."""
    now = rig.submitter.clock()
    prepared = [await rig.submitter._prepare(j, now, None) for j in jobs]
    stored = [replace(rig.submitter._new_job(p), confirm_within=0) for p in prepared]
    await rig.store.create_jobs(stored)
    return [p.job.id for p in prepared]


@pytest.mark.rabbitmq
async def test_the_sweep_publishes_jobs_a_crashed_submitter_stored(rig: Rig, applied):
    unkeyed, keyed = await stored_but_never_published(
        rig,
        JobRequest("email", {"n": 1}),
        JobRequest("email", {"n": 2}, idempotency_key="order-9"),
    )
    assert await rig.submitter.repair() == 2
    landed = await drain(applied, "taskq.email", 2)
    assert sorted(e.id for e in landed) == sorted([unkeyed, keyed])
    assert {e.id: e.payload for e in landed} == {unkeyed: {"n": 1}, keyed: {"n": 2}}
    # Published and recorded: the next sweep has nothing to do, and the key now replays.
    assert await rig.submitter.repair() == 0
    again = await rig.submitter.submit(JobRequest("email", {"n": 2}, idempotency_key="order-9"))
    assert (again.job_id, again.replayed) == (keyed, True)
    assert orjson.loads(again.response)["status"] == "queued"


@pytest.mark.rabbitmq
async def test_confirmed_jobs_are_left_alone_by_the_sweep(rig: Rig, applied):
    done = await rig.submitter.submit(JobRequest("email", {"n": 1}))
    await rig.submitter.close()  # the confirm is recorded in the background
    assert await rig.submitter.repair() == 0
    [landed] = await drain(applied, "taskq.email", 1)
    assert landed.id == done.job_id


@pytest.mark.rabbitmq
async def test_a_job_the_broker_refuses_for_good_is_marked_failed_with_the_reason(
    vhost: BrokerSettings, topology, tmp_path: Path
):
    # The topology was never applied to this vhost: every publish finds no exchange.
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    async with await ConfirmedPublisher.connect(vhost, topology) as publisher:
        submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
        rig = Rig(store, submitter, publisher)
        [job_id] = await stored_but_never_published(rig, JobRequest("email"))
        assert await submitter.repair() == 1
    failed = await store.get_job(job_id)
    await store.close()
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.last_error is not None
    assert "never published" in failed.last_error
    assert "topology apply" in failed.last_error


async def test_a_job_without_a_confirm_stays_for_the_sweep(topology):
    store = InMemoryJobStore()
    publisher = FailingPublisher(topology, ConfirmTimeoutError("no confirm in time"))
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
    with pytest.raises(ConfirmTimeoutError):
        await submitter.submit(JobRequest("email", idempotency_key="k"))
    # A job without a key keeps no row: its caller got the error, and if the message did
    # reach the broker, the worker that receives it writes the row.
    with pytest.raises(ConfirmTimeoutError):
        await submitter.submit(JobRequest("email"))
    await submitter.settle()
    [kept] = store.jobs.values()
    assert kept.status is JobStatus.QUEUED
    assert kept.id in store.publish_by
    # Its deadline passes, the broker is back: the sweep publishes it.
    store.publish_by[kept.id] = 0
    submitter._publisher = working = InMemoryPublisher(topology)
    assert await submitter.repair() == 1
    assert [e.id for e in working.queues["taskq.email"]] == [kept.id]


async def test_a_job_the_broker_refused_is_not_kept(topology):
    store = InMemoryJobStore()
    publisher = FailingPublisher(topology, UnroutableError("nobody takes it"))
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
    with pytest.raises(UnroutableError):
        await submitter.submit(JobRequest("email", idempotency_key="k"))
    results = await submitter.submit_many([JobRequest("email"), JobRequest("email")])
    assert all(isinstance(r, UnroutableError) for r in results)
    assert store.jobs == {}
    assert store.keys == {}


class DownPublisher(InMemoryPublisher):
    """The in-memory twin of the broker while its connection is down: every publish raises."""

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        raise BrokerUnavailableError("the connection to RabbitMQ is down")


async def test_a_publish_that_fails_as_a_whole_releases_the_key(topology):
    store = InMemoryJobStore()
    submitter = Submitter(topology, DownPublisher(topology), store, InMemoryBlobStore(), SETTINGS)
    with pytest.raises(BrokerUnavailableError):
        await submitter.submit(JobRequest("email", idempotency_key="k"))
    assert (store.jobs, store.keys) == ({}, {})
    # The broker is back: the same key is a new submission, not one "in progress".
    submitter._publisher = working = InMemoryPublisher(topology)
    done = await submitter.submit(JobRequest("email", idempotency_key="k"))
    assert not done.replayed
    assert [e.id for e in working.queues["taskq.email"]] == [done.job_id]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # 200 characters but 400 bytes: within a limit counted in characters, over AMQP's.
        ("correlation_id", "é" * 200),
        ("type", "email." + "é" * 200),
        ("type", "email.not a word"),
    ],
)
async def test_a_field_amqp_cannot_carry_is_refused_with_422_and_nothing_is_stored(
    topology, field, value
):
    api = make_api(topology)
    body = {"type": "email", field: value}
    async with api.client as client:
        single = await client.post("/jobs", json=body)
        batch = await client.post("/jobs/batch", json={"jobs": [body, {"type": "email"}]})
    assert single.status_code == 422, single.text
    assert single.json()["errors"][0]["field"] == field
    assert batch.status_code == 207
    [refused, accepted] = batch.json()["results"]
    assert refused["status"] == 422
    assert refused["error"]["errors"][0]["field"] == field
    assert accepted["status"] == 202
    await api.services.submitter.settle()
    assert [j.id for j in api.store.jobs.values()] == [accepted["job"]["id"]]


async def test_stored_first_jobs_get_a_confirm_deadline_and_confirms_ride_the_next_write(
    topology,
):
    store = InMemoryJobStore()
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    writes: list[tuple[list[NewJob], list[str]]] = []
    inner = store.create_jobs

    async def spy(items: Sequence[NewJob], *, confirmed=(), durable=True):
        writes.append((list(items), [c.job_id for c in confirmed]))
        return await inner(items, confirmed=confirmed, durable=durable)

    store.create_jobs = spy  # type: ignore[method-assign]
    first = await submitter.submit(JobRequest("email", callback_url="https://example.com/h"))
    assert store.publish_by.keys() == {first.job_id}  # confirmed, not yet recorded
    [second, third] = await submitter.submit_many([JobRequest("email"), JobRequest("email")])
    assert store.jobs.keys() == {first.job_id}  # the plain jobs' rows wait for company
    await submitter.close()
    # The plain jobs were published first: their rows carry no deadline, and are written in
    # one transaction that also records the first job's confirm.
    assert [[n.confirm_within for n in items] for items, _ in writes] == [
        [SubmitSettings().repair_after],
        [None, None],
    ]
    assert [confirmed for _, confirmed in writes] == [[], [first.job_id]]
    assert store.publish_by == {}
    assert {second.job_id, third.job_id} <= store.jobs.keys()


class OrderSpy(InMemoryPublisher):
    """The in-memory twin of the broker, noting whether each job's row existed when it was published."""

    def __init__(self, topology: CompiledTopology, store: InMemoryJobStore) -> None:
        super().__init__(topology)
        self.store = store
        self.stored_first: dict[str, bool] = {}

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        for envelope in envelopes:
            self.stored_first[envelope.id] = envelope.id in self.store.jobs
        return await super().publish_many(envelopes, routes)


async def test_only_jobs_without_a_key_or_callback_are_published_before_their_row(topology):
    store = InMemoryJobStore()
    publisher = OrderSpy(topology, store)
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
    plain = await submitter.submit(JobRequest("email"))
    keyed = await submitter.submit(JobRequest("email", idempotency_key="k"))
    hooked = await submitter.submit(JobRequest("email", callback_url="https://example.com/h"))
    later = await submitter.submit(JobRequest("email", delay=60))
    assert publisher.stored_first == {
        plain.job_id: False,
        keyed.job_id: True,
        hooked.job_id: True,
        later.job_id: True,
    }
    assert plain.job_id not in store.jobs  # written behind its confirm
    await submitter.settle()
    assert {plain.job_id, keyed.job_id, hooked.job_id, later.job_id} <= store.jobs.keys()


async def test_a_confirmed_job_whose_row_write_failed_is_accepted_and_its_message_makes_the_row(
    topology,
):
    store = InMemoryJobStore()
    publisher = InMemoryPublisher(topology)
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
    store.fail_with = StoreUnavailableError("the disk is full")
    done = await submitter.submit(JobRequest("email", {"n": 1}))
    [plain, keyed] = await submitter.submit_many(
        [JobRequest("email", {"n": 2}), JobRequest("email", idempotency_key="k")]
    )
    assert isinstance(keyed, StoreUnavailableError)  # its key comes first: nothing published
    assert not isinstance(plain, TaskqError)
    published = publisher.queues["taskq.email"]
    assert [e.id for e in published] == [done.job_id, plain.job_id]
    await submitter.settle()  # the rows' write fails: logged, not raised
    store.fail_with = None
    assert store.jobs == {}
    # The worker that receives them writes their rows.
    now = submitter.clock()
    await store.run_window([], [RunStart(e.id, 1, 60.0, now, e) for e in published])
    rows = [await store.get_job(e.id) for e in published]
    assert [(r.payload, r.status) for r in rows if r] == [
        ({"n": 1}, JobStatus.RUNNING),
        ({"n": 2}, JobStatus.RUNNING),
    ]


async def test_a_job_neither_stored_nor_published_fails_with_the_publish_error(topology):
    store = InMemoryJobStore()
    publisher = FailingPublisher(topology, UnroutableError("nobody takes it"))
    submitter = Submitter(topology, publisher, store, InMemoryBlobStore(), SETTINGS)
    store.fail_with = StoreUnavailableError("the disk is full")
    with pytest.raises(UnroutableError):
        await submitter.submit(JobRequest("email"))
    with pytest.raises(StoreUnavailableError):
        await submitter.submit(JobRequest("email", idempotency_key="k"))
    store.fail_with = None
    assert (store.jobs, store.keys, store.publish_by) == ({}, {}, {})

"""DLQ operations on the real broker: list, replay (once, not twice), purge, with filters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumers.dlq import DeadFilter, listing, purge, replay
from consumers.handlers import JobContext, Permanent
from jobstore.model import JobStatus, RunStart
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter, utc_now
from tests.broker import channel, next_message
from tests.consumers.rig import TOPOLOGY, Rig
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.store import InMemoryJobStore
from topology.apply import apply_topology
from topology.broker import connect
from topology.compiled import compile_topology, delivery_limit
from topology.envelope import decode
from topology.errors import BrokerUnavailableError
from topology.loader import parse_topology
from topology.spec import Priority

pytestmark = pytest.mark.rabbitmq


async def dead_jobs(rig: Rig, count: int, job_type: str = "mail.dlq") -> list[str]:
    fail = {"on": True}

    @rig.registry.handler(job_type)
    async def flaky(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        if fail["on"]:
            raise Permanent(f"down for {ctx.job_id}")
        return "ok"

    ids = [await rig.submit(job_type, {"n": i}) for i in range(count)]
    for job_id in ids:
        await rig.until(job_id, JobStatus.DEAD)
    fail["on"] = False
    return ids


async def test_list_shows_every_dead_letter_and_leaves_them_in_place(rig: Rig):
    ids = await dead_jobs(rig, 3)
    connection = await connect(rig.settings, name="dlq test")
    async with connection:
        letters = (await listing(connection, TOPOLOGY.group("mail"), DeadFilter())).letters
        again = (
            await listing(connection, TOPOLOGY.group("mail"), DeadFilter(job_id=ids[1]))
        ).letters
    assert sorted(letter.job_id for letter in letters) == sorted(ids)
    assert {letter.reason for letter in letters} == {"permanent"}
    assert all(letter.error.startswith("Permanent: down for") for letter in letters)
    assert [letter.job_id for letter in again] == [ids[1]]


async def test_replay_runs_each_job_once_and_a_second_replay_runs_nothing(rig: Rig):
    ids = await dead_jobs(rig, 4)
    group = TOPOLOGY.group("mail")
    connection = await connect(rig.settings, name="dlq test")
    async with connection:
        seen: list[tuple[int, int]] = []
        first = await replay(
            connection,
            TOPOLOGY,
            group,
            rig.publisher,
            rig.store,
            DeadFilter(reason="permanent"),
            rate=100,
            progress=lambda done, total: seen.append((done, total)),
        )
        for job_id in ids:
            await rig.until(job_id, JobStatus.SUCCEEDED)
        second = await replay(connection, TOPOLOGY, group, rig.publisher, rig.store, DeadFilter())
    assert (first.matched, first.kept) == (4, 0)
    assert seen[-1] == (4, 4)
    assert (second.matched, second.kept) == (0, 0)
    # Each job ran once failing and once, after the replay, succeeding: never twice after.
    assert sorted(rig.runs) == sorted(ids * 2)


async def test_a_replayed_job_that_used_every_attempt_runs_again(rig: Rig):
    # Three failed attempts are three starts, as many as the rig's poison bound: counted on
    # from there, the replayed job would be dead as poison before it ran.
    fail = {"on": True}

    @rig.registry.handler("mail.flaky")
    async def flaky(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        if fail["on"]:
            raise RuntimeError("down")
        return "ok"

    job_id = await rig.submit("mail.flaky")
    await rig.until(job_id, JobStatus.DEAD)
    fail["on"] = False
    connection = await connect(rig.settings, name="dlq test")
    async with connection:
        group = TOPOLOGY.group("mail")
        outcome = await replay(connection, TOPOLOGY, group, rig.publisher, rig.store, DeadFilter())
    await rig.until(job_id, JobStatus.SUCCEEDED)
    assert outcome.matched == 1
    assert rig.runs == [job_id] * 4
    job = await rig.store.get_job(job_id)
    assert job is not None
    assert job.attempts == 1


QUORUM = compile_topology(
    parse_topology(
        """
        groups:
          mail: {jobs: ["mail.#"], priority: {strategy: lanes, queue_type: quorum}}
        """.replace("        ", "")
    ),
    poison_deliveries=1,
)


async def test_a_message_past_the_delivery_limit_is_dead_lettered_and_replays_from_a_stale_status(
    vhost,
):
    await apply_topology(QUORUM, vhost)
    store = InMemoryJobStore()
    async with await ConfirmedPublisher.connect(vhost, QUORUM) as publisher:
        submitter = Submitter(QUORUM, publisher, store, InMemoryBlobStore())
        job_id = (await submitter.submit(JobRequest(type="mail.crash", payload={}))).job_id
        # A worker started it and died holding it: the row says running, the start is counted.
        await store.run_window([], [RunStart(job_id, 1, 0.01, utc_now())])
        lane = QUORUM.group("mail").work_queues[Priority.MEDIUM]
        deliveries = 0
        async with channel(vhost) as ch:
            queue = await ch.get_queue(lane, ensure=False)
            # Each worker that takes it dies before it settles: the broker counts the returns.
            while (message := await queue.get(fail=False, timeout=5)) is not None:
                deliveries += 1
                await message.nack(requeue=True)
        assert deliveries == delivery_limit(1) + 1

        connection = await connect(vhost, name="dlq test")
        async with connection:
            group = QUORUM.group("mail")
            (letter,) = (
                await listing(connection, group, DeadFilter(reason="delivery_limit"))
            ).letters
            outcome = await replay(connection, QUORUM, group, publisher, store, DeadFilter())
        async with channel(vhost) as ch:
            again = decode((await next_message(ch, lane)).body)
    assert (letter.job_id, letter.reason) == (job_id, "delivery_limit")
    assert "x-delivery-limit" in letter.error
    assert outcome.matched == 1
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    assert store.deliveries[job_id] == 0  # counted anew: the poison bound starts over
    assert (again.id, again.attempt) == (job_id, 1)


async def test_replay_only_touches_what_the_filter_chooses(rig: Rig):
    ids = await dead_jobs(rig, 3)
    group = TOPOLOGY.group("mail")
    connection = await connect(rig.settings, name="dlq test")
    async with connection:
        outcome = await replay(
            connection, TOPOLOGY, group, rig.publisher, rig.store, DeadFilter(job_id=ids[0])
        )
        await rig.until(ids[0], JobStatus.SUCCEEDED)
        left = (await listing(connection, group, DeadFilter())).letters
    assert (outcome.matched, outcome.kept) == (1, 2)
    assert sorted(letter.job_id for letter in left) == sorted(ids[1:])


async def test_purge_deletes_the_chosen_dead_letters_only(rig: Rig):
    ids = await dead_jobs(rig, 3)
    group = TOPOLOGY.group("mail")
    connection = await connect(rig.settings, name="dlq test")
    async with connection:
        young = await purge(connection, group, DeadFilter(older_than=timedelta(hours=1)))
        outcome = await purge(connection, group, DeadFilter(error=f"down for {ids[2]}"))
        left = (await listing(connection, group, DeadFilter())).letters
    assert young.matched == 0
    assert (outcome.matched, outcome.kept) == (1, 2)
    assert sorted(letter.job_id for letter in left) == sorted(ids[:2])


async def test_a_dead_connection_is_broker_unavailable_not_a_crash(rig: Rig):
    connection = await connect(rig.settings, name="dlq test")
    await connection.close()
    with pytest.raises(BrokerUnavailableError):
        await listing(connection, TOPOLOGY.group("mail"), DeadFilter())

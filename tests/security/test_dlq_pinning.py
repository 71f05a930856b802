"""A big DLQ is never held whole: listing and replay work a bounded page at a time.

Listing used to take every dead letter unacked until it had read them all, so a DLQ of a
million messages sat on one channel (and in the API's memory) for as long as that took.
Each test watches the DLQ's ready count while the operation runs, on a channel of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aio_pika
import pytest

from consumers.dispatch import DeadReason, dead
from consumers.dlq import PAGE
from jobstore.model import JobStatus
from producers.submit import JobRequest
from tests.broker import channel, depth
from tests.security.stack import Stack
from topology.envelope import Envelope

pytestmark = pytest.mark.rabbitmq
T = TypeVar("T")
DEAD = 250  # two and a half pages
DLQ, WORK = "taskq.work.dlq", "taskq.work"


async def fill_dlq(stack: Stack, count: int) -> list[str]:
    """Submit ``count`` jobs and dead-letter each as a worker would; return their ids."""
    ids = []
    publisher = stack.app.state.services.publisher
    for i in range(count):
        done = await stack.submitter.submit(JobRequest(type="work.a", payload={"n": i}))
        await stack.submitter.settle()  # as the job's worker would have written its row
        letter = Envelope.new("work.a", {"n": i}, id=done.job_id)
        decision = dead(
            letter, DeadReason.EXHAUSTED, f"Boom: {i}", group="work", topology=stack.topology
        )
        assert decision.envelope is not None
        assert decision.route is not None
        await publisher.publish(decision.envelope, decision.route)
        await stack.store.transition(
            done.job_id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
        )
        ids.append(done.job_id)
    async with channel(stack.broker) as ch:
        await (await ch.get_queue(WORK, ensure=False)).purge()
    return ids


@asynccontextmanager
async def watching(stack: Stack, queues: tuple[str, ...]) -> AsyncIterator[list[int]]:
    """Record the ready count of ``queues`` together, read back to back, until the block ends."""
    seen: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        async with channel(stack.broker, name="watcher") as ch:
            while not stop.is_set():
                seen.append(sum([await depth(ch, q) for q in queues]))

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        stop.set()
        await watcher


async def while_watched(stack: Stack, queues: tuple[str, ...], work: Awaitable[T]) -> tuple[T, int]:
    """Return what ``work`` returns and the fewest ready messages seen while it ran."""
    async with watching(stack, queues) as seen:
        result = await work
    assert len(seen) > 3, "the watcher must have looked while the operation ran"
    return result, min(seen)


async def list_all(stack: Stack, limit: int = PAGE, **filters: Any) -> list[str]:
    """Return the ids of every dead letter the admin route lists, page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await stack.client.get("/admin/dlq/work", params=params)
        assert answer.status_code == 200, answer.text
        ids += [row["id"] for row in answer.json()["letters"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return ids


async def test_a_listing_holds_at_most_a_page_and_leaves_the_dlq_as_it_was(api_stack: Stack):
    ids = await fill_dlq(api_stack, DEAD)
    listed, fewest = await while_watched(api_stack, (DLQ,), list_all(api_stack))
    assert listed == ids  # every one, once, in the order they died
    assert fewest >= DEAD - PAGE  # never more than a page taken off the queue at once
    assert await api_stack.occupied() == {DLQ: DEAD}
    assert await list_all(api_stack) == ids  # and the same order again: nothing moved for good
    filtered = await list_all(api_stack, error="Boom: 24")  # a substring: 24 and 240..249
    assert filtered == [ids[24], *ids[240:250]]
    # Pages smaller than what a pass fetches: the rest goes back to the head, unmoved.
    assert await list_all(api_stack, limit=7, error="Boom: 1") == [
        ids[1],
        *ids[10:20],
        *ids[100:200],
    ]
    assert await list_all(api_stack) == ids


async def test_a_replay_moves_a_page_at_a_time_with_confirms_before_acks(api_stack: Stack):
    ids = await fill_dlq(api_stack, DEAD)
    replay = api_stack.client.post("/admin/dlq/work/replay", json={"all": True, "rate": 1000})
    answer, fewest = await while_watched(api_stack, (DLQ, WORK), replay)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"replayed": DEAD, "left": 0}
    assert fewest >= DEAD - PAGE  # DLQ and work queue together: at most a page in flight
    assert await api_stack.occupied() == {WORK: DEAD}
    stored = {job.id: job.status for job in await api_stack.jobs()}
    assert stored == dict.fromkeys(ids, JobStatus.QUEUED)


async def test_a_replay_that_cannot_publish_stops_and_loses_nothing(api_stack: Stack):
    ids = await fill_dlq(api_stack, 30)
    # A dead letter of a type no group takes any more: its replay is unroutable.
    stray = Envelope.new("gone.x", {"n": -1})
    decision = dead(stray, DeadReason.EXHAUSTED, "Boom", group="work", topology=api_stack.topology)
    assert decision.envelope is not None
    assert decision.route is not None
    await api_stack.app.state.services.publisher.publish(decision.envelope, decision.route)
    answer = await api_stack.client.post("/admin/dlq/work/replay", json={"all": True, "rate": 1000})
    assert answer.status_code == 503, answer.text  # a publish the broker did not take
    assert "routing key 'gone.x'" in answer.json()["detail"]
    # The 30 went back to work; the stray one is still dead; nothing vanished.
    assert await api_stack.occupied() == {WORK: 30, DLQ: 1}
    assert await list_all(api_stack) == [stray.id]
    stored = {job.id: job.status for job in await api_stack.jobs()}
    assert stored == dict.fromkeys(ids, JobStatus.QUEUED)


async def test_an_undecodable_dead_letter_reads_the_same_after_going_round(api_stack: Stack):
    async with channel(api_stack.broker) as ch:
        await ch.default_exchange.publish(aio_pika.Message(b"not an envelope"), routing_key=WORK)
        rejected = await (await ch.get_queue(WORK, ensure=False)).get(timeout=5)
        await rejected.reject(requeue=False)  # the broker dead-letters it, with x-death

    async def views() -> list[dict[str, Any]]:
        answer = await api_stack.client.get("/admin/dlq/work")
        assert answer.json()["next_cursor"] is None
        return [
            {k: v for k, v in row.items() if k != "dead_since"} for row in answer.json()["letters"]
        ]

    first = await views()
    assert [(row["type"], row["reason"], row["error"]) for row in first] == [
        ("work", "rejected", "undecodable body")
    ]
    assert await views() == first  # its copy kept the broker's death record
    assert await api_stack.occupied() == {DLQ: 1}

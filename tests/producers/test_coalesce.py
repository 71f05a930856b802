"""Coalescer: concurrent calls share batches; posted items need nobody waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobstore.coalesce import Coalescer


class Writer:
    """A batch write that records its batches and can be held open, as a slow store would be."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]


async def test_calls_made_while_a_batch_is_written_share_the_next_batch():
    writer = Writer()
    coalescer = Coalescer(writer.write)
    writer.gate.clear()
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)  # the first batch is being written
    rest = [asyncio.create_task(coalescer.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    writer.gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert writer.batches == [[1], [2, 3, 4]]


async def test_with_two_at_once_a_call_goes_beside_a_batch_in_flight_and_the_third_waits():
    writer = Writer()
    coalescer = Coalescer(writer.write, at_once=2)
    writer.gate.clear()  # every batch waits, as a publish waits for its confirm
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    assert writer.batches == [[1], [2]]  # the second did not queue behind the first
    rest = [asyncio.create_task(coalescer.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0)
    assert writer.batches == [[1], [2]]  # two in flight: the others wait, together
    writer.gate.set()
    assert await asyncio.gather(first, second, *rest) == [10, 20, 30, 40]
    assert writer.batches == [[1], [2], [3, 4]]
    await coalescer.drain()


async def test_drain_waits_for_every_batch_in_flight():
    writer = Writer()
    coalescer = Coalescer(writer.write, at_once=2)
    writer.gate.clear()
    calls = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    drained = asyncio.create_task(coalescer.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    writer.gate.set()
    await drained
    assert all(call.done() for call in calls)
    assert sorted(i for batch in writer.batches for i in batch) == [1, 2, 3]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs():
    writer = Writer()
    coalescer = Coalescer(writer.write)
    writer.gate.clear()
    bad = asyncio.create_task(coalescer.submit(-1))
    await asyncio.sleep(0)
    good = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    writer.gate.set()
    with pytest.raises(ValueError, match="bad item"):
        await bad
    assert await good == 20


async def test_posted_items_are_written_without_anyone_waiting():
    writer = Writer()
    coalescer: Coalescer[int, int] = Coalescer(writer.write)
    coalescer.post(7)
    coalescer.post(8)
    await coalescer.drain()
    assert writer.batches == [[7, 8]]


async def test_posted_items_linger_for_company_until_the_timer_a_full_batch_or_a_drain():
    writer = Writer()
    coalescer: Coalescer[int, int] = Coalescer(writer.write, max_batch=3, linger=0.05)
    coalescer.post(1)
    coalescer.post(2)
    await asyncio.sleep(0.01)
    assert writer.batches == []  # still waiting for company
    await asyncio.sleep(0.15)
    assert writer.batches == [[1, 2]]  # no socket write came along: the timer sent them
    for i in (3, 4, 5):
        coalescer.post(i)
    await asyncio.sleep(0.01)
    assert writer.batches[1:] == [[3, 4, 5]]  # a full batch goes at once
    coalescer.post(6)
    await coalescer.drain()
    assert writer.batches[2:] == [[6]]  # a drain does not wait for the timer


async def test_due_items_are_written_behind_the_next_socket_write_not_before_it():
    writer = Writer()
    coalescer: Coalescer[int, int] = Coalescer(writer.write, linger=0.05)
    order: list[str] = []
    coalescer.post(1)
    coalescer.write_behind()  # not due yet: they keep waiting for company
    await asyncio.sleep(0)
    assert writer.batches == []
    await asyncio.sleep(0.06)  # due now, and the fallback timer has not fired
    assert writer.batches == []
    coalescer.post(2)
    coalescer.write_behind()
    # What the caller makes ready right after (the socket write it queues) runs first.
    asyncio.get_running_loop().call_soon(order.append, "socket write")
    await asyncio.sleep(0)
    assert order == ["socket write"]
    assert writer.batches == []
    await asyncio.sleep(0.001)
    assert writer.batches == [[1, 2]]

"""Coalescer: concurrent calls share batches; an eager idle caller writes at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobstore.coalesce import Coalescer


class Writer:
    """A batch write that records its batches and can be held open, as a slow store would be."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.tasks.append(asyncio.current_task())
        await self.gate.wait()
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]


@pytest.mark.parametrize("eager", [False, True])
async def test_calls_made_while_a_batch_is_written_share_the_next_batch(eager):
    writer = Writer()
    coalescer = Coalescer(writer.write, eager=eager)
    writer.gate.clear()
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)  # the first batch is being written
    rest = [asyncio.create_task(coalescer.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    writer.gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert writer.batches == [[1], [2, 3, 4]]


async def test_an_eager_idle_caller_writes_in_its_own_task_and_a_lazy_one_in_a_flush_task():
    eager_writer, lazy_writer = Writer(), Writer()
    assert await Coalescer(eager_writer.write, eager=True).submit(5) == 50
    assert await Coalescer(lazy_writer.write).submit(5) == 50
    assert eager_writer.tasks == [asyncio.current_task()]
    assert lazy_writer.tasks[0] is not asyncio.current_task()


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs():
    writer = Writer()
    coalescer = Coalescer(writer.write, eager=True)
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

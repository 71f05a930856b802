"""``Coalescer``: calls made while a batch is being written join the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Turns concurrent one-item calls into batch calls of ``write``, ``at_once`` batches at a time."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 256,
        linger: float = 0.0,
        at_once: int = 1,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        # More than one batch in flight: a call made while a batch waits on a round trip (a
        # publish's confirm) goes at once instead of queueing behind it; calls made while
        # ``at_once`` batches are in flight still wait and share the next one.
        self._at_once = at_once
        # Posted items wait this long for company (a full batch goes at once): for writes
        # nobody awaits, where one transaction per item would cost more than the wait. Then
        # they are due: written behind the caller's next socket write (``write_behind``), or
        # after one more linger if none comes.
        self._linger = linger
        self._timer: asyncio.TimerHandle | None = None
        self._due = False
        self._waiting: list[tuple[Item, asyncio.Future[Result] | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing: set[asyncio.Future[None]] = set()  # callers' own batches, being written

    async def submit(self, item: Item) -> Result:
        """Add ``item`` to the next batch and return its result (or raise the batch's error)."""
        # When nothing waits and a batch may start, the caller writes its own at once: a lone
        # call costs no task and no turn of the loop.
        loop = asyncio.get_running_loop()
        if self._waiting or len(self._writing) + self._flushing() >= self._at_once:
            future: asyncio.Future[Result] = loop.create_future()
            self._waiting.append((item, future))
            self._start()
            return await future
        writing = loop.create_future()
        self._writing.add(writing)
        try:
            [result] = await self._write([item])
        finally:
            self._writing.discard(writing)
            writing.set_result(None)
            self._start()  # the calls made meanwhile
        return result

    def post(self, item: Item) -> None:
        """Add ``item`` to the next batch without waiting for it; ``write`` reports its failure."""
        self._waiting.append((item, None))
        if self._linger and len(self._waiting) < self._max_batch:
            if self._timer is None and not self._due:
                self._timer = asyncio.get_running_loop().call_later(self._linger, self._ripen)
            return
        self._start()

    def _ripen(self) -> None:
        self._due = True
        self._timer = asyncio.get_running_loop().call_later(self._linger, self._start)

    def write_behind(self) -> None:
        """Start writing the due items one turn of the loop from now, behind what is ready then."""
        # Called just before a socket write whose reply the caller awaits: the batch is written
        # while that reply travels, not while the caller is ready to go on.
        if self._due:
            self._start(behind=True)

    def _start(self, *, behind: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = False
        if self._waiting and len(self._writing) < self._at_once and not self._flushing():
            self._flusher = asyncio.create_task(self._flush(behind))

    def _flushing(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    async def drain(self) -> None:
        """Return once every batch submitted so far has been written (or has failed)."""
        self._start()  # posted items still lingering go now
        if self._writing:
            await asyncio.wait(self._writing)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self, behind: bool = False) -> None:
        if behind:
            await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = (
                self._waiting[: self._max_batch],
                self._waiting[self._max_batch :],
            )
            try:
                results = await self._write([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)

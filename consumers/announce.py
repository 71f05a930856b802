"""``Announcer``: a worker's job status events, published in batches on the events exchange.

Events are advisory (the job store is the truth), so they never hold a job up: each one is
queued and every event queued during one turn of the event loop goes out in one socket write.
A running event waits ``running_delay`` first and is dropped if the job's outcome comes
sooner: for a short run it would be stale before anyone could act on it.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from jobstore.model import JobRecord, JobStatus
from producers.events import event_body, event_key
from producers.publisher import Publisher
from topology.errors import TaskqError


class Announcer:
    """Queues job status events and publishes them together on the next loop turn."""

    def __init__(self, publisher: Publisher, *, running_delay: float) -> None:
        self._publisher = publisher
        self._running_delay = running_delay
        self._queued: list[tuple[str, bytes]] = []
        self._unannounced: dict[str, asyncio.TimerHandle] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._scheduled = False

    def running(self, job: JobRecord) -> None:
        """Announce that ``job`` runs, unless its outcome is announced within the delay."""
        self._unannounced[job.id] = asyncio.get_running_loop().call_later(
            self._running_delay, self._running_now, job
        )

    def announce(self, job: JobRecord) -> None:
        """Queue ``job``'s status event; it supersedes a running event not yet sent."""
        if job.status is not JobStatus.RUNNING:
            pending = self._unannounced.pop(job.id, None)
            if pending is not None:
                pending.cancel()
        self._queued.append((event_key(job), event_body(job)))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def close(self) -> None:
        """Drop running events not yet due, and publish what is queued."""
        for handle in self._unannounced.values():
            handle.cancel()
        self._unannounced.clear()
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self._publish()

    def _running_now(self, job: JobRecord) -> None:
        if self._unannounced.pop(job.id, None) is not None:
            self.announce(job)

    def _start_flush(self) -> None:
        self._scheduled = False
        previous = self._flushing

        async def run() -> None:
            if previous is not None:  # batches go out in order
                await asyncio.gather(previous, return_exceptions=True)
            await self._publish()

        self._flushing = asyncio.get_running_loop().create_task(run())

    async def _publish(self) -> None:
        batch, self._queued = self._queued, []
        try:
            await self._publisher.publish_events(batch)
        except TaskqError as exc:
            logger.warning("{} status events not published: {}", len(batch), exc)

"""A stream source: reads a Redis stream through its consumer group, submits each entry's job, acks once confirmed (docs/streams.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis
from loguru import logger
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError, ResponseError

from producers.publisher import ConfirmedPublisher
from producers.streams.entries import Fields, dead_letter_fields, entry_request, text, unread
from producers.submit import JobRequest, Submitted, Submitter
from telemetry import tracing
from telemetry.metrics import MetricSet, counter, gauge
from topology.errors import ContractError, JobRejectedError, StreamUnavailableError, TaskqError
from topology.reserved import stream_producer
from topology.settings import StreamSettings
from topology.spec import StreamSourceSpec, StreamStart

Entry = tuple[str, Fields | None]  # an entry id, and its fields (None: deleted since it was read)
DEAD_LETTERS_KEPT = 100_000  # a dead-letter stream is trimmed to about this many entries
BACKLOG_EVERY_S = 5.0  # how often the group's backlog is read for the metrics
# Batches submitted at once: the next batch is read and checked while earlier ones await
# their store writes and confirms.
IN_FLIGHT = 3


class StreamMetrics(MetricSet):
    """Entries by outcome, the group's backlog, and whether a source waits out a broker alarm."""

    entries = counter(
        "taskq_stream_entries_total",
        "Stream entries by source and outcome (accepted, replayed, dead_lettered, retried, gone).",
        "source outcome",
    )
    backlog = gauge(
        "taskq_stream_backlog",
        "Entries of a source's stream its group has not acknowledged: not yet read, or pending.",
        "source",
        multiprocess_mode="livemax",
    )
    paused = gauge(
        "taskq_stream_paused",
        "1 while a stream source stops reading because the broker blocks publishers.",
        "source",
        multiprocess_mode="livemax",
    )


class StreamSource:
    """Turns one stream's entries into jobs, one batch at a time, until told to stop."""

    def __init__(
        self,
        name: str,
        spec: StreamSourceSpec,
        consumer: str,
        redis: aioredis.Redis,
        submitter: Submitter,
        publisher: ConfirmedPublisher,  # asked whether the broker blocks publishing now
        settings: StreamSettings,
        metrics: StreamMetrics | None = None,
    ) -> None:
        """Read ``spec``'s stream as ``consumer`` of its group, for the source ``name``."""
        self._name, self._spec, self._consumer = name, spec, consumer
        self._redis = redis
        self._submitter = submitter
        self._publisher = publisher
        self._settings = settings
        metrics = metrics or StreamMetrics()
        self._counted = functools.cache(metrics.entries.labels)
        self._backlog = metrics.backlog.labels(name)
        self._paused = metrics.paused.labels(name)
        self._claim_from = "0-0"  # where the next XAUTOCLAIM scan starts
        self._claim_at = self._backlog_at = 0.0  # when the next claim and measurement are due
        # Entries this consumer read before it stopped, or that waited: read them again first.
        self._own_first = True
        self._waited = False  # some entries waited: retry after stream_retry_interval
        self._batches: set[asyncio.Task[int]] = set()  # being submitted now

    async def run(self, stop: asyncio.Event) -> None:
        """Read, submit and acknowledge until ``stop`` is set; the batches in hand are finished first."""
        spec = self._spec
        what = (self._name, spec.stream, self._consumer, spec.group)
        logger.info("stream source {} reading {} as {} of group {}", *what)
        try:
            while not stop.is_set():
                try:
                    await self._step(stop)
                except StreamUnavailableError as exc:
                    logger.warning("stream source {}: {}; trying again", self._name, exc)
                    await _sleep(stop, self._settings.stream_retry_interval)
        finally:
            await self._settle()
            self._paused.set(0)
        await self._leave()

    async def _leave(self) -> None:
        """Remove this reader's name from the group once it holds no entry, so readers scaled away leave no trace."""
        # One that still holds entries stays: deleting the name would drop them unread.
        spec, consumer = self._spec, self._consumer
        try:
            async with self._redis_call("XPENDING"):
                held = await self._redis.xpending_range(
                    spec.stream, spec.group, min="-", max="+", count=1, consumername=consumer
                )
                if not held:
                    await self._redis.xgroup_delconsumer(spec.stream, spec.group, consumer)
        except StreamUnavailableError as exc:
            logger.warning("stream source {}: {}; its name stays in the group", self._name, exc)

    async def _step(self, stop: asyncio.Event) -> None:
        """Wait out a broker alarm, or measure, claim, or read one batch and start submitting it."""
        if self._publisher.blocked:
            # Publishes would only wait for the alarm to end: read nothing meanwhile.
            self._paused.set(1)
            await _sleep(stop, 0.1)
            return
        self._paused.set(0)
        now = time.monotonic()
        if now >= self._backlog_at:
            self._backlog_at = now + BACKLOG_EVERY_S
            await self._measure()
        if now >= self._claim_at:
            self._claim_at = now + self._spec.claim_after / 2000
            await self._settle()  # an entry is never in two batches at once
            claimed = await self._claim()
            if claimed:
                self._batches.add(asyncio.create_task(self._handle(claimed, again=True)))
                return
        if self._own_first:
            await self._settle()
            if self._waited:  # the broker or a store is down: give it a moment
                self._waited = False
                await _sleep(stop, self._settings.stream_retry_interval)
            entries = await self._read("0")
            if not entries:
                self._own_first = False  # none left over: on to new entries
                return
            self._batches.add(asyncio.create_task(self._handle(entries, again=True)))
            await self._settle()
            return
        entries = await self._read(">")
        if entries:
            self._batches.add(asyncio.create_task(self._handle(entries)))
            if len(self._batches) >= IN_FLIGHT:
                await self._reap()

    async def _settle(self) -> None:
        """Wait until every batch in hand is done."""
        while self._batches:
            await self._reap()

    async def _reap(self) -> None:
        """Wait for a batch to be done; one whose entries wait sends the reader back to its pending ones."""
        done, _ = await asyncio.wait(self._batches, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            self._batches.discard(task)
            try:
                waiting = task.result()
            except StreamUnavailableError as exc:  # its acknowledgement failed: read it again
                logger.warning("stream source {}: {}", self._name, exc)
                waiting = 1
            if waiting:
                self._own_first = self._waited = True

    async def ensure_group(self) -> None:
        """Create the stream's consumer group (and the stream) unless it exists; raise ``StreamUnavailableError`` if Redis fails."""
        start = "0" if self._spec.start is StreamStart.FIRST else "$"
        try:
            async with self._redis_call("XGROUP CREATE"):
                await self._redis.xgroup_create(
                    self._spec.stream, self._spec.group, id=start, mkstream=True
                )
        except StreamUnavailableError as exc:
            if not isinstance(exc.__cause__, ResponseError) or "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, since: str) -> list[Entry]:
        """Return the next batch: this consumer's pending entries (``since`` 0) or new ones (``>``)."""
        block = None if since != ">" else int(self._settings.stream_block * 1000)
        async with self._redis_call("XREADGROUP"):
            answer = await self._redis.xreadgroup(
                self._spec.group,
                self._consumer,
                {self._spec.stream: since},
                count=self._spec.batch,
                block=block,
            )
        return [_entry(raw) for _, entries in cast(list[Any], answer or []) for raw in entries]

    async def _claim(self) -> list[Entry]:
        """Take over entries other readers of the group read but left unacknowledged for ``claim_after``."""
        async with self._redis_call("XAUTOCLAIM"):
            answer = await self._redis.xautoclaim(
                self._spec.stream,
                self._spec.group,
                self._consumer,
                min_idle_time=self._spec.claim_after,
                start_id=self._claim_from,
                count=self._spec.batch,
            )
        following, entries = answer[0], answer[1]
        self._claim_from = text(following)
        claimed = [_entry(raw) for raw in entries]
        if claimed:
            logger.info("stream source {} claimed {} idle entries", self._name, len(claimed))
        return claimed

    async def _handle(self, entries: Sequence[Entry], *, again: bool = False) -> int:
        """Submit the batch's jobs, dead-letter what makes none, acknowledge the rest; return how many wait."""
        name, spec = self._name, self._spec
        acks: list[str] = []
        dead: list[tuple[str, Fields, str]] = []
        made: list[tuple[str, Fields, JobRequest]] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream since it was read: nothing to do
                acks.append(entry_id)
                self._counted(name, "gone").inc()
                continue
            request = entry_request(name, spec, entry_id, fields)
            if isinstance(request, JobRejectedError):
                dead.append((entry_id, fields, str(request)))
            else:
                made.append((entry_id, fields, request))
        waiting: list[TaskqError] = []
        with tracing.span(
            f"{spec.stream} ingest",
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "redis", "messaging.batch.message_count": len(entries)},
        ):
            outcomes = await self._submit([request for _, _, request in made], again=again)
        for (entry_id, fields, _), outcome in zip(made, outcomes, strict=True):
            if isinstance(outcome, Submitted):
                acks.append(entry_id)
                self._counted(name, "replayed" if outcome.replayed else "accepted").inc()
            elif isinstance(outcome, JobRejectedError | ContractError):
                dead.append((entry_id, fields, str(outcome)))
            else:  # the broker or a store is down: read it again later
                waiting.append(outcome)
                self._counted(name, "retried").inc()
        if waiting:
            logger.warning(
                "stream source {}: {} entries wait to be read again: {}",
                name,
                len(waiting),
                waiting[0],
            )
        await self._dead_letter(dead)
        if acks:
            async with self._redis_call("XACK"):
                await self._redis.xack(spec.stream, spec.group, *acks)
        return len(waiting)

    async def _submit(
        self, requests: Sequence[JobRequest], *, again: bool
    ) -> list[Submitted | TaskqError]:
        """Submit ``requests`` as the source's own, at most a submitter's batch at a time."""
        items: list[JobRequest | Submitted] = list(requests)
        if again:
            # A job stored already was published: a second copy could run again a job that
            # failed and waits for its retry, so it is answered as replayed instead. The
            # settle writes this process's own rows, held behind their confirms, first.
            try:
                await self._submitter.settle()
                store = self._submitter.store
                for index, request in enumerate(requests):
                    job = await store.get_job(request.job_id) if request.job_id else None
                    if job is not None:
                        items[index] = Submitted(job.id, job, replayed=True)
            except TaskqError as exc:  # the store is down: they wait, as a failed submission
                return [exc] * len(requests)
        outcomes: list[Submitted | TaskqError] = []
        most = self._submitter.settings.batch_max
        for start in range(0, len(items), most):
            chunk = items[start : start + most]
            outcomes += await self._submitter.submit_many(
                chunk, producer=stream_producer(self._name)
            )
        return outcomes

    async def _dead_letter(self, dead: Sequence[tuple[str, Fields, str]]) -> None:
        """Add each entry that makes no job to the dead-letter stream with its reason, and acknowledge it, at once."""
        if not dead:
            return
        spec = self._spec
        # One transaction: the dead letters are added and their entries acknowledged, or neither.
        async with self._redis_call("XADD"), self._redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, reason in dead:
                held = dead_letter_fields(spec.stream, spec.group, entry_id, fields, reason)
                pipe.xadd(spec.dead_letter_stream, held, maxlen=DEAD_LETTERS_KEPT)
            pipe.xack(spec.stream, spec.group, *(entry_id for entry_id, _, _ in dead))
            await pipe.execute()
        for entry_id, _, reason in dead:
            self._counted(self._name, "dead_lettered").inc()
            logger.warning(
                "stream source {}: entry {} dead-lettered to {}: {}",
                self._name,
                entry_id,
                spec.dead_letter_stream,
                reason,
            )

    async def _measure(self) -> None:
        """Set the backlog gauge: the group's entries not yet read, and those read but unacknowledged."""
        async with self._redis_call("XINFO GROUPS"):
            groups = await self._redis.xinfo_groups(self._spec.stream)
            for group in groups:
                if text(group.get("name")) == self._spec.group:
                    lag = await unread(self._redis, self._spec, group)
                    self._backlog.set(lag + int(group.get("pending") or 0))

    @asynccontextmanager
    async def _redis_call(self, command: str) -> AsyncIterator[None]:
        """Turn a Redis failure of ``command`` into ``StreamUnavailableError``, keeping the cause."""
        try:
            yield
        except RedisError as exc:
            raise StreamUnavailableError(
                f"{command} on stream {self._spec.stream!r} failed: {exc}"
            ) from exc


def open_redis(settings: StreamSettings) -> aioredis.Redis:
    """Return a client of the Redis at ``TASKQ_REDIS_URL`` (it connects on first use)."""
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=5,
        # A blocking read waits up to stream_block on the server: the socket must wait longer.
        socket_timeout=settings.stream_block + 10,
        health_check_interval=30,
    )


def _entry(raw: Any) -> Entry:
    entry_id, fields = raw
    return text(entry_id), fields


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

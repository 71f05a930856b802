"""Dead-letter operations: inspect, replay and purge a group's DLQ, with filters and a rate limit."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from loguru import logger

from consumers.dispatch import ERROR_HEADER, MAX_ERROR_CHARS, REASON_HEADER, ROUTING_KEY_HEADER
from jobstore.model import JobEvent, JobEventKind, JobStatus, JobStore
from producers.publisher import Publisher
from telemetry import tracing
from topology.broker import CONNECT_ERRORS, existing
from topology.compiled import CompiledGroup, CompiledTopology
from topology.envelope import Envelope, decode
from topology.errors import BrokerUnavailableError, ContractError, TaskqError
from topology.names import DEFAULT_TENANT
from topology.routes import job_route

Progress = Callable[[int, int], None]
PAGE = 100
"""Most messages an operation holds unacked at once."""
MARK_HEADER = "taskq-dlq-pass"  # the pass that moved a copy to the tail
EXPIRES_HEADER = "taskq-dlq-expires"  # epoch ms when the dead letter's retention ends


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in a DLQ, as an operator sees it."""

    job_id: str
    job_type: str
    reason: str
    error: str
    attempts: int
    dead_since: datetime | None
    envelope: Envelope | None
    trace_id: str | None = None  # of the trace the job died in (its traceparent header)

    def view(self) -> dict[str, Any]:
        """Return what an operator sees of the dead letter (the CLI and the admin routes)."""
        return {
            "id": self.job_id,
            "type": self.job_type,
            "reason": self.reason,
            "attempts": self.attempts,
            "dead_since": self.dead_since.isoformat() if self.dead_since else None,
            "error": self.error,
        }

    @classmethod
    def read(cls, message: AbstractIncomingMessage) -> DeadLetter:
        """Return what the message's headers and body say about the dead job."""
        headers = message.headers or {}
        deaths = headers.get("x-death")
        first = deaths[0] if isinstance(deaths, list) and deaths else None
        death: dict[str, Any] = first if isinstance(first, dict) else {}
        reason = str(headers.get(REASON_HEADER) or death.get("reason") or "unknown")
        when = message.timestamp if isinstance(message.timestamp, datetime) else None
        since = when.replace(tzinfo=UTC) if when and when.tzinfo is None else when
        error = str(headers.get(ERROR_HEADER) or "")
        if reason == "delivery_limit" and not error:
            error = "delivered past its queue's x-delivery-limit unsettled: it may crash its worker"
        trace = _trace_id(headers.get("traceparent"))
        try:
            envelope = decode(message.body)
        except ContractError:
            job_type = str(headers.get(ROUTING_KEY_HEADER) or message.routing_key or "?")
            job_id = str(message.message_id or "?")
            undecodable = error or "undecodable body"
            return cls(job_id, job_type, reason, undecodable, 0, since, None, trace)
        attempts = envelope.attempt
        return cls(envelope.id, envelope.type, reason, error, attempts, since, envelope, trace)


MAX_FILTER_CHARS = MAX_ERROR_CHARS
"""The longest error filter taken: a longer one could match no last error, which is cut to it."""


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead letters an operation touches; every given condition must hold."""

    job_id: str | None = None
    job_ids: frozenset[str] | None = None  # any one of these jobs (several chosen by hand)
    job_type: str | None = None
    reason: str | None = None
    error: str | None = None  # text found in the last error (a plain substring, never a pattern)
    older_than: timedelta | None = None
    # Only this tenant's letters. An undecodable one names no tenant: it counts as the default
    # tenant's, the operators' (webhook jobs and the admin key of `taskctl up` live there too).
    tenant: str | None = None

    def __call__(self, letter: DeadLetter, now: datetime) -> bool:
        """Return whether ``letter`` matches."""
        owner = DEFAULT_TENANT if letter.envelope is None else letter.envelope.tenant
        wanted = (self.tenant, self.job_id, self.job_type, self.reason)
        found = (owner, letter.job_id, letter.job_type, letter.reason)
        if any(want is not None and want != got for want, got in zip(wanted, found, strict=True)):
            return False
        if self.job_ids is not None and letter.job_id not in self.job_ids:
            return False
        if self.error is not None and self.error not in letter.error:
            return False
        if self.older_than is not None:
            return letter.dead_since is not None and now - letter.dead_since >= self.older_than
        return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay or purge did: the dead letters it took, and those it left in the DLQ."""

    matched: int
    kept: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, and the cursor that continues it (``None``: the DLQ went round)."""

    letters: list[DeadLetter]
    cursor: str | None


class Fate(Enum):
    """What a pass does with one message of a page."""

    KEEP = "keep"  # copied to the tail, then acked: it stays in the DLQ
    GONE = "gone"  # acked: deleted, or published elsewhere (confirmed)
    PUT_BACK = "put_back"  # returned to the head, where it was


@dataclass(slots=True)
class _Pass:
    """One pass over a DLQ: pages of unacked messages, each settled in turn."""

    channel: AbstractChannel
    queue: AbstractQueue
    group: CompiledGroup
    mark: str  # on the copies this pass moves to the tail; also a listing's cursor
    seen: int = 0
    wrapped: bool = False  # met a message this pass already moved: every message was read
    kept: int = 0  # messages settled as KEEP, and as GONE: what an operation reports
    gone: int = 0

    @property
    def total(self) -> int:
        """Return how many messages the pass reads at most."""
        return self.queue.declaration_result.message_count or 0

    @property
    def done(self) -> bool:
        """Return whether the pass has read every message."""
        return self.wrapped or self.seen >= self.total

    async def fetch(self, most: int) -> list[tuple[AbstractIncomingMessage, DeadLetter]]:
        """Return up to ``most`` messages, unacked; stop at one this pass already moved."""
        fetched: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        while len(fetched) < most and not self.done:
            message = await self.queue.get(fail=False, timeout=5)
            if message is None:
                self.wrapped = True  # empty: nothing left to read
                break
            if (message.headers or {}).get(MARK_HEADER) in (self.mark, self.mark.encode()):
                self.wrapped = True
                await message.nack(requeue=True)  # back to the head, where it was
                break
            self.seen += 1
            fetched.append((message, DeadLetter.read(message)))
        return fetched

    async def settle(
        self, fetched: list[tuple[AbstractIncomingMessage, DeadLetter]], fates: list[Fate]
    ) -> None:
        """Copy kept messages to the tail (confirmed), then ack or return every original."""
        kept = [m for (m, _), fate in zip(fetched, fates, strict=True) if fate is Fate.KEEP]
        copies = await asyncio.gather(*(self._copy(m) for m in kept), return_exceptions=True)
        failed = {id(m) for m, copy in zip(kept, copies, strict=True) if copy is not None}
        for (message, _), fate in zip(fetched, fates, strict=True):
            if fate is Fate.PUT_BACK or id(message) in failed:
                self.seen -= 1  # not read after all: the next call reads it
                self.wrapped = False
                await message.nack(requeue=True)
            else:
                await message.ack()
                self.kept += fate is Fate.KEEP
                self.gone += fate is Fate.GONE
        error = next((c for c in copies if c is not None), None)
        if error is not None:
            raise error

    async def _copy(self, message: AbstractIncomingMessage) -> None:
        """Publish ``message`` again at the DLQ's tail, marked with this pass; confirmed."""
        headers = dict(message.headers or {})
        headers[MARK_HEADER] = self.mark
        if ROUTING_KEY_HEADER not in headers and message.routing_key:
            headers[ROUTING_KEY_HEADER] = message.routing_key
        expiration = None
        retention = self.group.spec.dlq.retention
        if retention is not None:
            # A copy starts the queue's TTL anew; its first copy records when the dead letter
            # should go, and each later copy keeps only what is left of that.
            now_ms = int(time.time() * 1000)
            expires = headers.setdefault(EXPIRES_HEADER, now_ms + retention)
            left = int(expires) - now_ms if isinstance(expires, int) else retention
            expiration = timedelta(milliseconds=max(1, left))
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=message.priority,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            expiration=expiration,
        )
        await self.channel.default_exchange.publish(
            copy, routing_key=self.group.dead_letter_queue, mandatory=True
        )


def _trace_id(traceparent: object) -> str | None:
    """Return the trace id of a W3C ``traceparent`` (``00-<trace>-<span>-<flags>``), if it is one."""
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    parts = traceparent.split("-") if isinstance(traceparent, str) else []
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


@asynccontextmanager
async def _pass(
    connection: AbstractRobustConnection, group: CompiledGroup, cursor: str | None = None
) -> AsyncIterator[_Pass]:
    """Open a pass over ``group``'s DLQ, on a channel of its own for the time of the block."""
    try:
        channel = await connection.channel(publisher_confirms=True)
    except (*CONNECT_ERRORS, RuntimeError) as exc:
        # aio-pika raises RuntimeError for a connection that is closed or reconnecting.
        raise BrokerUnavailableError("RabbitMQ is not reachable right now") from exc
    try:
        with existing(group.dead_letter_queue):
            queue = await channel.declare_queue(group.dead_letter_queue, passive=True)
        yield _Pass(channel, queue, group, cursor or secrets.token_hex(16))
    finally:
        await channel.close()


async def replay(
    connection: AbstractRobustConnection,
    topology: CompiledTopology,
    group: CompiledGroup,
    publisher: Publisher,
    store: JobStore,
    chosen: DeadFilter,
    *,
    rate: float = 50.0,
    progress: Progress = lambda done, total: None,
) -> Outcome:
    """Send matching dead letters back to work with a fresh attempt count, ``rate`` per second."""
    moment = datetime.now(UTC)
    failures: list[BaseException] = []
    # A page holds about a second's worth of replays, and the rate limit waits before a
    # page's publishes, so no page is held unacked for long.
    page = max(1, min(PAGE, int(rate)))
    next_at = time.monotonic()

    async with _pass(connection, group) as run:
        while not failures and (fetched := await run.fetch(page)):
            fates = [Fate.KEEP] * len(fetched)
            picked = [
                (i, message, letter, envelope)
                for i, (message, letter) in enumerate(fetched)
                if (envelope := letter.envelope) is not None and chosen(letter, moment)
            ]
            if picked:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at, time.monotonic()) + len(picked) / rate
            outcomes = await asyncio.gather(
                *(_replay_one(topology, publisher, store, *pick[1:]) for pick in picked),
                return_exceptions=True,
            )
            for (i, _, letter, _), outcome in zip(picked, outcomes, strict=True):
                fates[i] = Fate.GONE if outcome is None else Fate.PUT_BACK
                if outcome is not None:
                    failures.append(outcome)
                    logger.warning("dlq replay: job {} stays dead: {}", letter.job_id, outcome)
            await run.settle(fetched, fates)
            progress(run.seen, run.total)
    if failures:
        raise failures[0]
    return Outcome(run.gone, run.kept)


async def _replay_one(
    topology: CompiledTopology,
    publisher: Publisher,
    store: JobStore,
    message: AbstractIncomingMessage,
    letter: DeadLetter,
    envelope: Envelope,
) -> None:
    """Record the job as queued, then publish it to work with confirms (undone on failure)."""
    fresh = envelope.model_copy(update={"attempt": 1, "not_before": None})
    # The store first: a worker that gets the job before it reads "queued" would take the
    # job for finished ("dead") and ack it unrun.
    at = datetime.now(UTC)
    await store.revive(fresh.id, at)
    try:
        # A new trace for the new life, linked to the trace the job died in.
        with tracing.span(f"{fresh.type} replay", link_headers=message.headers, parent_headers={}):
            trace = tracing.trace_id()
            await publisher.publish(fresh, job_route(topology, fresh))
    except Exception:
        # Dead again, with an end time: the retention sweep counts from it.
        await store.transition(
            fresh.id,
            JobStatus.DEAD,
            allowed_from=frozenset({JobStatus.QUEUED}),
            finished_at=datetime.now(UTC),
        )
        raise
    reason = letter.reason
    logger.info("dlq replay: job {} ({}) back to work; it was {}", fresh.id, fresh.type, reason)
    # Recorded once the job is back on its queue, at the time it left the dead.
    replayed = JobEventKind.REPLAYED
    step = JobEvent(fresh.id, at, replayed, envelope.attempt, reason=reason, trace_id=trace)
    try:
        await store.record_events([step])
    except TaskqError as exc:  # the replay stands; only its step in the job's history is missing
        logger.warning("dlq replay: job {}'s replay not recorded in its history: {}", fresh.id, exc)


async def purge(
    connection: AbstractRobustConnection,
    group: CompiledGroup,
    chosen: DeadFilter,
    *,
    progress: Progress = lambda done, total: None,
) -> Outcome:
    """Delete the matching dead letters for good."""
    moment = datetime.now(UTC)

    async with _pass(connection, group) as run:
        while fetched := await run.fetch(PAGE):
            fates = [Fate.GONE if chosen(letter, moment) else Fate.KEEP for _, letter in fetched]
            for (_, letter), fate in zip(fetched, fates, strict=True):
                if fate is Fate.GONE:
                    what = (letter.job_id, letter.job_type, letter.reason)
                    logger.info("dlq purge: job {} ({}) deleted; it was {}", *what)
            await run.settle(fetched, fates)
            progress(run.seen, run.total)
    return Outcome(run.gone, run.kept)


async def listing(
    connection: AbstractRobustConnection,
    group: CompiledGroup,
    chosen: DeadFilter,
    *,
    limit: int = PAGE,
    cursor: str | None = None,
) -> Page:
    """Return up to ``limit`` matching dead letters, leaving every message in the DLQ."""
    moment = datetime.now(UTC)
    found: list[DeadLetter] = []

    async with _pass(connection, group, cursor) as run:
        while len(found) < limit and (fetched := await run.fetch(PAGE)):
            fates = []
            for _, letter in fetched:
                # Past the page: back to the head unmoved, where the next call starts.
                past = len(found) == limit
                if not past and chosen(letter, moment):
                    found.append(letter)
                fates.append(Fate.PUT_BACK if past else Fate.KEEP)
            await run.settle(fetched, fates)
    return Page(found, None if run.done else run.mark)

"""Dead-letter operations: inspect, replay and purge a group's DLQ, with filters and a rate limit.

Replays reset the attempt count but keep the idempotency key, so a job whose effects already
happened is not run again; every replayed or purged job is logged (the audit trail) and
recorded in the job store.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from loguru import logger

from consumers.dispatch import ERROR_HEADER, REASON_HEADER
from jobstore.model import JobStatus, JobStore
from producers.publisher import Publisher
from telemetry import tracing
from topology.envelope import Envelope, decode
from topology.errors import ContractError
from topology.model import CompiledGroup, CompiledTopology
from topology.routes import job_route

Progress = Callable[[int, int], None]


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
        try:
            envelope: Envelope | None = decode(message.body)
        except ContractError:
            envelope = None
        reason = str(headers.get(REASON_HEADER) or death.get("reason") or "unknown")
        when = message.timestamp if isinstance(message.timestamp, datetime) else None
        return cls(
            job_id=envelope.id if envelope else str(message.message_id or "?"),
            job_type=envelope.type if envelope else str(message.routing_key or "?"),
            reason=reason,
            error=str(
                headers.get(ERROR_HEADER) or ("undecodable body" if envelope is None else "")
            ),
            attempts=envelope.attempt if envelope else 0,
            dead_since=when.replace(tzinfo=UTC) if when and when.tzinfo is None else when,
            envelope=envelope,
        )


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead letters an operation touches; every given condition must hold."""

    job_id: str | None = None
    job_type: str | None = None
    reason: str | None = None
    error: str | None = None  # a regular expression searched in the last error
    older_than: timedelta | None = None
    tenant: str | None = None  # only this tenant's letters (an undecodable one has none)

    def __call__(self, letter: DeadLetter, now: datetime) -> bool:
        """Return whether ``letter`` matches."""
        if self.tenant is not None and (
            letter.envelope is None or letter.envelope.tenant != self.tenant
        ):
            return False
        if self.job_id is not None and letter.job_id != self.job_id:
            return False
        if self.job_type is not None and letter.job_type != self.job_type:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.error is not None and not re.search(self.error, letter.error):
            return False
        if self.older_than is not None:
            return letter.dead_since is not None and now - letter.dead_since >= self.older_than
        return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a replay or purge did."""

    matched: int
    kept: int
    skipped_undecodable: int = 0


async def scan(
    connection: AbstractRobustConnection,
    group: CompiledGroup,
    act: Callable[[AbstractIncomingMessage, DeadLetter], Awaitable[bool]],
    *,
    progress: Progress = lambda done, total: None,
) -> int:
    """Take every message the DLQ holds now, once, calling ``act`` on each; return how many.

    ``act`` acks what it handles and returns True, or returns False to keep the message. Kept
    messages stay unacked until the scan ends and are then returned together: a message
    returned at once would go back to the head of the queue and be read again.
    """
    channel = await connection.channel()
    queue = await channel.declare_queue(group.dead_letter_queue, passive=True)
    total = queue.declaration_result.message_count or 0
    seen = 0
    kept: list[AbstractIncomingMessage] = []
    try:
        while seen < total:
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                break
            seen += 1
            if not await act(message, DeadLetter.read(message)):
                kept.append(message)
            progress(seen, total)
    finally:
        for message in kept:
            await message.nack(requeue=True)
        await channel.close()
    return seen


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
    counts = {"matched": 0, "kept": 0, "undecodable": 0}
    interval = 1 / rate if rate > 0 else 0.0
    next_at = time.monotonic()

    async def act(message: AbstractIncomingMessage, letter: DeadLetter) -> bool:
        nonlocal next_at
        if letter.envelope is None or not chosen(letter, moment):
            counts["kept" if letter.envelope else "undecodable"] += 1
            return False
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # the replay rate limit
        next_at = time.monotonic() + interval
        fresh = letter.envelope.model_copy(update={"attempt": 1, "not_before": None})
        # The store first: a worker that gets the job before it reads "queued" would take the
        # job for finished ("dead") and ack it unrun.
        await store.transition(
            fresh.id,
            JobStatus.QUEUED,
            allowed_from=frozenset({JobStatus.DEAD}),
            updated_at=datetime.now(UTC),
            attempts=0,
            finished_at=None,
        )
        try:
            # A new trace for the new life, linked to the trace the job died in.
            with tracing.span(
                f"{fresh.type} replay", link_headers=message.headers, parent_headers={}
            ):
                await publisher.publish(fresh, job_route(topology, fresh))  # confirmed, then ack
        except Exception:
            await store.transition(
                fresh.id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
            )
            raise
        await message.ack()
        counts["matched"] += 1
        logger.info(
            "dlq replay: job {} ({}) back to work; it was {}", fresh.id, fresh.type, letter.reason
        )
        return True

    await scan(connection, group, act, progress=progress)
    return Outcome(counts["matched"], counts["kept"], counts["undecodable"])


async def purge(
    connection: AbstractRobustConnection,
    group: CompiledGroup,
    chosen: DeadFilter,
    *,
    progress: Progress = lambda done, total: None,
) -> Outcome:
    """Delete the matching dead letters for good."""
    moment = datetime.now(UTC)
    counts = {"matched": 0, "kept": 0}

    async def act(message: AbstractIncomingMessage, letter: DeadLetter) -> bool:
        if not chosen(letter, moment):
            counts["kept"] += 1
            return False
        await message.ack()
        counts["matched"] += 1
        logger.info(
            "dlq purge: job {} ({}) deleted; it was {}",
            letter.job_id,
            letter.job_type,
            letter.reason,
        )
        return True

    await scan(connection, group, act, progress=progress)
    return Outcome(counts["matched"], counts["kept"])


async def listing(
    connection: AbstractRobustConnection, group: CompiledGroup, chosen: DeadFilter
) -> list[DeadLetter]:
    """Return the matching dead letters, leaving every message in the DLQ."""
    moment = datetime.now(UTC)
    found: list[DeadLetter] = []

    async def act(message: AbstractIncomingMessage, letter: DeadLetter) -> bool:
        if chosen(letter, moment):
            found.append(letter)
        return False

    await scan(connection, group, act)
    return found

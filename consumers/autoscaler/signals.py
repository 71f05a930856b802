"""The autoscaler's signals (backlog, consumers, rates, age): a group's from the management API, a stream source's from Redis."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from producers.streams.entries import text, unread
from topology.closing import AsyncClosing
from topology.compiled import CompiledGroup
from topology.errors import ManagementApiError
from topology.management import ManagementClient
from topology.settings import BrokerSettings
from topology.spec import StreamSourceSpec, StreamStart


@dataclass(frozen=True, slots=True)
class QueueSignals:
    """What the broker says about a group's work queues (or Redis about a stream source's backlog) at one moment."""

    ready: int  # messages ready, summed over the group's work queues
    unacked: int  # messages delivered and not yet acknowledged
    consumers: int = 0  # consumers on the group's most urgent work queue
    publish_rate: float = 0.0  # msg/s published into the work queues
    ack_rate: float = 0.0  # msg/s acknowledged (delivered when the broker reports no acks)
    oldest_age: float | None = None  # seconds the oldest head message has waited, when known


class SignalsUnavailable(ManagementApiError):
    """The management API (or Redis) was unreachable, too slow, failed, or answered an unusable shape."""


@asynccontextmanager
async def _reading(what: str, seconds: float, failure: type[Exception]) -> AsyncIterator[None]:
    """Turn a reading of ``what`` that raises ``failure`` or takes over ``seconds`` into ``SignalsUnavailable``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise SignalsUnavailable(f"reading {what} took over {seconds:g}s") from exc
    except failure as exc:
        status = getattr(exc, "status", None)
        raise SignalsUnavailable(f"reading {what}: {exc}", status=status) from exc


class SignalReader(AsyncClosing):
    """Reads a group's signals over one reused management API session; close it when done."""

    def __init__(self, settings: BrokerSettings, *, timeout: float = 5.0) -> None:
        self._vhost = settings.vhost
        self._timeout = timeout
        self._client = ManagementClient(settings.model_copy(update={"management_timeout": timeout}))

    async def read(self, group: CompiledGroup) -> QueueSignals:
        """Return ``group``'s signals, read within the timeout; raise ``SignalsUnavailable`` if not."""
        bodies = await self._queues(f"group {group.name!r}", group.queue_names)
        read_at = time.time()
        lanes = [
            _figures(f"group {group.name!r} queue {name!r}", body, read_at)
            for name, body in zip(group.queue_names, bodies, strict=True)
        ]
        # The lanes' figures add up, but consumers come from the first (most urgent) lane.
        ages = [lane.oldest_age for lane in lanes if lane.oldest_age is not None]
        return replace(
            lanes[0],
            ready=sum(lane.ready for lane in lanes),
            unacked=sum(lane.unacked for lane in lanes),
            publish_rate=sum(lane.publish_rate for lane in lanes),
            ack_rate=sum(lane.ack_rate for lane in lanes),
            oldest_age=max(ages, default=None),
        )

    async def depth(self, queue: str) -> int:
        """Return how many messages ``queue`` holds (a DLQ or a delay tier: not work)."""
        (body,) = await self._queues(f"queue {queue!r}", (queue,))
        return _count(f"queue {queue!r}", {"messages": 0} | body, "messages")

    async def close(self) -> None:
        """Close the HTTP session; a later ``read`` opens a new one."""
        await self._client.close()

    async def _queues(self, what: str, names: Sequence[str]) -> list[dict[str, Any]]:
        # One deadline for the whole reading: a group with four lanes gets one timeout, not four.
        async with _reading(what, self._timeout, ManagementApiError):
            return [await self._client.queue(self._vhost, name) for name in names]


def stream_target(source: str) -> str:
    """Return the name the autoscaler scales a stream source's readers by: ``stream:<source>``."""
    return f"stream:{source}"


class StreamSignalReader(AsyncClosing):
    """Reads each stream source's backlog and rates, as a group's ``QueueSignals``, over one Redis client; close it when done."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._timeout = timeout
        self._clock = clock
        # (stream, group) -> (when, entries delivered to the group, entries added to the stream)
        self._last: dict[tuple[str, str], tuple[float, int, int]] = {}

    async def read(self, spec: StreamSourceSpec) -> QueueSignals:
        """Return the source's signals, read within the timeout; raise ``SignalsUnavailable`` if not."""
        where = f"stream {spec.stream!r} group {spec.group!r}"
        async with _reading(where, self._timeout, RedisError):
            return await self._read(spec)

    async def close(self) -> None:
        """Close the Redis client's connections."""
        await self._redis.aclose()

    async def _read(self, spec: StreamSourceSpec) -> QueueSignals:
        # ready: the group's lag (entries not yet delivered to any reader); unacked: its pending
        # entries; the rates are measured between two readings. consumers stays 0: Redis keeps
        # a reader's name in the group after it exits, so the readers running are the actuator's.
        try:
            groups = await self._redis.xinfo_groups(spec.stream)
            added = int((await self._redis.xinfo_stream(spec.stream)).get("entries-added") or 0)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return QueueSignals(0, 0)  # no stream yet: nothing to read
        group = next((g for g in groups if text(g.get("name")) == spec.group), None)
        if group is None:
            # Its first reader creates the group from the stream's first entry, or its end.
            length = await self._redis.xlen(spec.stream) if spec.start is StreamStart.FIRST else 0
            return QueueSignals(length, 0)
        pending = _xinfo_count(group, "pending")
        lag = await unread(self._redis, spec, group)
        delivered = _xinfo_count(group, "entries-read")
        now = self._clock()
        before = self._last.get((spec.stream, spec.group))
        self._last[(spec.stream, spec.group)] = (now, delivered, added)
        if before is None or now <= before[0]:
            return QueueSignals(lag, pending)
        elapsed = now - before[0]
        return QueueSignals(
            lag,
            pending,
            ack_rate=max(0, delivered - before[1]) / elapsed,
            publish_rate=max(0, added - before[2]) / elapsed,
        )


def _xinfo_count(group: Mapping[str, Any], field: str) -> int:
    value = group.get(field)
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError) as exc:
        raise SignalsUnavailable(f"XINFO GROUPS: {field} is not a count: {value!r}") from exc


def _figures(where: str, body: Mapping[str, Any], read_at: float) -> QueueSignals:
    """Return one work queue's figures, or raise naming the field that is wrong."""
    if "messages_ready" not in body:
        # The broker leaves every figure out until its first statistics round after the
        # queue was declared (or when stats collection is off): nothing to read yet.
        raise SignalsUnavailable(
            f"{where} reports no messages_ready yet; the broker has not collected "
            "its statistics (or management_agent.disable_metrics_collector is set)"
        )
    stats = body.get("message_stats", {})
    if not isinstance(stats, Mapping):
        raise SignalsUnavailable(f"{where}: message_stats is not an object: {stats!r}")
    ack_key = "ack_details" if "ack_details" in stats else "deliver_get_details"
    # Absent on quorum queues, null when the head message has no timestamp or the queue is empty.
    head = body.get("head_message_timestamp")
    if head is not None and not _number(head):
        raise SignalsUnavailable(f"{where}: head_message_timestamp is not a number: {head!r}")
    return QueueSignals(
        ready=_count(where, body, "messages_ready"),
        unacked=_count(where, body, "messages_unacknowledged"),
        consumers=_count(where, body, "consumers"),
        publish_rate=_rate(where, stats, "publish_details"),
        ack_rate=_rate(where, stats, ack_key),
        # A clock behind the publisher's would make the age negative; the head is at least new.
        oldest_age=None if head is None else max(0.0, read_at - head),
    )


def _count(where: str, body: Mapping[str, Any], field: str) -> int:
    value = body.get(field)
    # bool is an int in Python, and never a count in JSON.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SignalsUnavailable(f"{where}: {field} is not a count: {value!r}")
    return value


def _rate(where: str, stats: Mapping[str, Any], field: str) -> float:
    details = stats.get(field)
    if details is None:
        return 0.0  # a queue that never saw the operation has no entry for it
    rate = details.get("rate") if isinstance(details, Mapping) else None
    if not _number(rate) or rate < 0:
        raise SignalsUnavailable(f"{where}: message_stats.{field}.rate is not a rate: {details!r}")
    return float(rate)


def _number(value: object) -> TypeGuard[int | float]:
    # json.loads accepts NaN and Infinity, which no figure of the broker's can be.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

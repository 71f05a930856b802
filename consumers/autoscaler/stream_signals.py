"""A stream source's backlog (entries its group has not read, and read but not acknowledged) read from Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from consumers.autoscaler.signals import QueueSignals, SignalsUnavailable
from topology.closing import AsyncClosing
from topology.spec import StreamSourceSpec, StreamStart


def stream_target(source: str) -> str:
    """Return the name the autoscaler scales a stream source's readers by: ``stream:<source>``."""
    return f"stream:{source}"


class StreamSignalReader(AsyncClosing):
    """Reads each stream source's backlog and rates over one Redis client; close it when done.

    The figures fill ``QueueSignals`` as a group's do: ``ready`` is the group's lag (entries
    not yet delivered to any reader), ``unacked`` its pending entries, ``ack_rate`` the
    entries delivered per second and ``publish_rate`` those added, both measured between two
    readings. ``consumers`` is left 0: Redis keeps a reader's name in the group after it
    exits, so the readers running are the actuator's to count.
    """

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
        try:
            async with asyncio.timeout(self._timeout):
                return await self._read(spec)
        except TimeoutError as exc:
            raise SignalsUnavailable(f"reading {where} took over {self._timeout:g}s") from exc
        except RedisError as exc:
            raise SignalsUnavailable(f"reading {where}: {exc}") from exc

    async def close(self) -> None:
        """Close the Redis client's connections."""
        await self._redis.aclose()

    async def _read(self, spec: StreamSourceSpec) -> QueueSignals:
        try:
            groups = await self._redis.xinfo_groups(spec.stream)
            added = int((await self._redis.xinfo_stream(spec.stream)).get("entries-added") or 0)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return _signals(0, 0)  # no stream yet: nothing to read
        group = next((g for g in groups if _text(g.get("name")) == spec.group), None)
        if group is None:
            # Its first reader creates the group from the stream's first entry, or its end.
            length = await self._redis.xlen(spec.stream) if spec.start is StreamStart.FIRST else 0
            return _signals(length, 0)
        pending = _count(group, "pending")
        lag = group.get("lag")
        if lag is None:
            # Redis cannot tell the lag after entries were deleted inside the unread range:
            # count them, up to what the largest decision needs.
            most = spec.scale.max * spec.scale.backlog_per_worker
            after = "(" + _text(group.get("last-delivered-id"))
            lag = len(await self._redis.xrange(spec.stream, min=after, max="+", count=most) or ())
        delivered = _count(group, "entries-read")
        now = self._clock()
        before = self._last.get((spec.stream, spec.group))
        self._last[(spec.stream, spec.group)] = (now, delivered, added)
        if before is None or now <= before[0]:
            return _signals(int(lag), pending)
        elapsed = now - before[0]
        return _signals(
            int(lag),
            pending,
            ack_rate=max(0, delivered - before[1]) / elapsed,
            publish_rate=max(0, added - before[2]) / elapsed,
        )


def _signals(
    lag: int, pending: int, *, ack_rate: float = 0.0, publish_rate: float = 0.0
) -> QueueSignals:
    return QueueSignals(
        ready=lag,
        unacked=pending,
        consumers=0,
        publish_rate=publish_rate,
        ack_rate=ack_rate,
        oldest_age=None,
    )


def _count(group: Mapping[str, Any], field: str) -> int:
    value = group.get(field)
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError) as exc:
        raise SignalsUnavailable(f"XINFO GROUPS: {field} is not a count: {value!r}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

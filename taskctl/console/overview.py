"""The overview (every consumer group's backlog, DLQ, consumers and oldest message, kept fresh), the breakers and scaling page, and the webhook sources page."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from jobstore.model import JobStore
from taskctl.autoscaler_status import read_status
from taskctl.console.sse import STREAM_S, frame, stream
from taskctl.console.web import Visit, seconds_text
from topology.compiled import CompiledGroup, CompiledTopology
from topology.errors import TaskqError
from topology.management import ManagementClient, message_rate
from topology.names import Priority
from topology.settings import BrokerSettings
from webhooks.receiver import delivery_log

BROKER_EVERY_S = 2.0  # how old the broker's figures may be when a page or stream asks
STORE_EVERY_S = 10.0  # the store's split by priority counts every queued job: less often
OLD_S = 300.0  # a message waiting longer than this needs a look
CHANGES = 50  # breaker transitions shown, the latest
ACCEPTED = frozenset({"accepted", "replayed"})  # replayed: a duplicate delivery, no second job
PRIORITIES = tuple(reversed(Priority))  # urgent first
Queued = dict[str, Counter[Priority]]  # by group: the store's queued jobs by priority


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One consumer group as the overview shows it (``None``: the broker did not say)."""

    name: str
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    oldest_s: float | None = None
    dead: int | None = None
    in_rate: float | None = None
    out_rate: float | None = None
    by_priority: Mapping[Priority, int | None] = field(default_factory=dict)
    split_from: str = "store"  # where the priority split comes from: "broker" lanes or "store"

    @property
    def attention(self) -> frozenset[str]:
        """Return the figures that need someone's action: these, and only these, are coloured."""
        needs = set()
        if self.dead:
            needs.add("dead")
        if self.ready and self.consumers == 0:
            needs.add("consumers")
        if self.oldest_s is not None and self.oldest_s > OLD_S:
            needs.add("oldest")
        return frozenset(needs)

    def view(self) -> dict[str, Any]:
        """Return the figures as text, as the page and its live updates show them."""
        shown = {
            "ready": _count(self.ready),
            "unacked": _count(self.unacked),
            "consumers": _count(self.consumers),
            "oldest": seconds_text(self.oldest_s),
            "dead": _count(self.dead),
            "rates": "?"
            if self.in_rate is None or self.out_rate is None
            else f"{self.in_rate:.1f} / {self.out_rate:.1f}",
        }
        shown |= {p.value: _count(self.by_priority.get(p)) for p in PRIORITIES}
        return {"figures": shown, "attention": sorted(self.attention)}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every group's figures at one moment, and what could not be read."""

    groups: list[GroupFigures]
    problems: list[str]

    def view(self) -> dict[str, Any]:
        """Return what a live update sends."""
        return {"groups": {g.name: g.view() for g in self.groups}, "problems": self.problems}


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


class Overview:
    """Reads the figures at most every few seconds, however many pages and streams ask."""

    def __init__(self, broker: BrokerSettings) -> None:
        self._broker = broker
        self._lock = asyncio.Lock()
        self._queues: tuple[float, dict[str, dict[str, Any]], str | None] = (0.0, {}, None)
        self._queued: tuple[float, Queued, str | None] = (0.0, {}, None)

    async def snapshot(self, topology: CompiledTopology, store: JobStore) -> Snapshot:
        """Return the figures of every group, reading what is older than it may be."""
        async with self._lock:
            now = time.monotonic()
            if now - self._queues[0] >= BROKER_EVERY_S:
                self._queues = (now, *await self._read_broker())
            if now - self._queued[0] >= STORE_EVERY_S:
                self._queued = (now, *await _read_store(store, topology))
        _, queues, broker_problem = self._queues
        _, queued, store_problem = self._queued
        read_at = time.time()
        groups = [_figures(g, queues, queued, read_at) for g in topology.groups]
        return Snapshot(groups, [p for p in (broker_problem, store_problem) if p])

    async def _read_broker(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        try:
            async with ManagementClient(self._broker) as client:
                rows = await client.queue_figures(self._broker.vhost)
        except TaskqError as exc:
            return {}, f"the broker's figures are unavailable: {exc}"
        return {str(row.get("name")): row for row in rows}, None


async def _read_store(store: JobStore, topology: CompiledTopology) -> tuple[Queued, str | None]:
    """Return the queued jobs of each group by priority, as the store counts them."""
    try:
        counts = await store.queued_counts()
    except TaskqError as exc:
        return {}, f"the job store's counts are unavailable: {exc}"
    # Each type's group is found once (a pattern match per group), not once per group and row.
    owners: dict[str, CompiledGroup | None] = {}
    queued: Queued = {}
    for job_type, priority, n in counts:
        if job_type not in owners:
            owners[job_type] = topology.group_for(job_type)
        if (owner := owners[job_type]) is not None:
            queued.setdefault(owner.name, Counter())[priority] += n
    return queued, None


def _figures(
    group: CompiledGroup,
    queues: Mapping[str, Mapping[str, Any]],
    queued: Queued,
    read_at: float,
) -> GroupFigures:
    """Return a group's figures from its queues' rows (a lane each, or one) and the store's counts."""
    counted = queued.get(group.name, Counter())  # the store's split by priority
    split: dict[Priority, int | None] = {p: counted[p] for p in Priority}
    lanes = [queues.get(name) for name in group.queue_names]
    dlq = queues.get(group.dead_letter_queue)
    if not all(lanes) or dlq is None:
        return GroupFigures(group.name, by_priority=split)
    rows = [lane for lane in lanes if lane is not None]
    heads = [_number(r.get("head_message_timestamp")) for r in rows]
    ages = [max(0.0, read_at - head) for head in heads if head is not None]
    source = "store"
    if len(group.queue_names) > 1:  # a lane per priority: the broker's own split
        split = {
            p: _int(queues.get(group.work_queues[p], {}).get("messages_ready")) for p in Priority
        }
        source = "broker"
    return GroupFigures(
        group.name,
        ready=_sum(_int(r.get("messages_ready")) for r in rows),
        unacked=_sum(_int(r.get("messages_unacknowledged")) for r in rows),
        # Every lane has the group's workers on it: the first (most urgent) lane counts them.
        consumers=_int(rows[0].get("consumers")),
        oldest_s=max(ages, default=None),
        dead=_int(dlq.get("messages_ready")),
        in_rate=sum(message_rate(r, "publish_details") for r in rows),
        out_rate=sum(message_rate(r, "ack_details") for r in rows),
        by_priority=split,
        split_from=source,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sum(values: Any) -> int | None:
    found = list(values)
    return None if any(v is None for v in found) else sum(found)


async def overview_page(overview: Overview, status_url: str, visit: Visit) -> Response:
    """Show every group's figures, workers and last scaling decision, and the open breakers; its script follows ``overview_events``."""
    submitter = visit.services.submitter
    snapshot, scaling, breakers = await asyncio.gather(
        overview.snapshot(submitter.topology, submitter.store),
        read_status(status_url, visit.session.credential),
        submitter.store.list_breakers(),
    )
    return visit.page(
        "overview.html",
        snapshot=snapshot,
        priorities=PRIORITIES,
        scaling=scaling,
        decisions=scaling.by_group(),
        breakers=[b for b in breakers if b.state != "closed"],
    )


async def scaling_page(status_url: str, visit: Visit) -> Response:
    """Show every recorded breaker (open first), the latest transitions, and the autoscaler's decisions and changes."""
    store = visit.services.submitter.store
    breakers = await store.list_breakers()
    breakers.sort(key=lambda b: (b.state == "closed", b.group, b.dependency, b.worker))
    changes = await store.list_breaker_changes(limit=CHANGES)
    status = await read_status(status_url, visit.session.credential)
    return visit.page("scaling.html", breakers=breakers, changes=changes, scaling=status)


async def sources(visit: Visit) -> Response:
    """Show every source of the topology with what this process received from it."""
    log = delivery_log(visit.request.app)
    shown = [
        {
            "name": name,
            "scheme": spec.scheme,
            "counts": log.counts(name),
            "latest": log.latest(name),
        }
        for name, spec in visit.services.submitter.topology.webhooks
    ]
    return visit.page("webhooks.html", sources=shown, accepted=ACCEPTED)


async def overview_events(overview: Overview, visit: Visit) -> Response:
    """Stream the figures every few seconds (Server-Sent Events)."""
    submitter = visit.services.submitter

    async def figures() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + STREAM_S
        while time.monotonic() < deadline:
            snapshot = await overview.snapshot(submitter.topology, submitter.store)
            yield frame("overview", snapshot.view())
            await asyncio.sleep(BROKER_EVERY_S)

    return stream(figures())

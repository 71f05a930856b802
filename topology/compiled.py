"""The topology as the broker holds it: frozen exchanges, queues and bindings, compiled from a ``TopologySpec``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from topology import names, routing
from topology.errors import TopologyError, UnknownGroupError
from topology.limits import excerpt
from topology.schedules import ScheduleSpec
from topology.settings import WorkerSettings
from topology.spec import (
    MAX_PRIORITY,
    GroupSpec,
    Priority,
    PriorityStrategy,
    QueueType,
    StreamSourceSpec,
    TopologySpec,
    WebhookSourceSpec,
)

ArgValue = str | int | bool
Args = tuple[tuple[str, ArgValue], ...]
ExchangeType = Literal["topic", "direct", "headers", "fanout"]


def args(values: Mapping[str, ArgValue | None]) -> Args:
    """Return declaration arguments as a sorted, hashable tuple, leaving out ``None`` values."""
    return tuple(sorted((k, v) for k, v in values.items() if v is not None))


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange declaration."""

    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Args = ()


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue declaration; ``arguments`` hold the ``x-`` arguments RabbitMQ checks."""

    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: Args = ()

    @property
    def queue_type(self) -> str:
        """Return the queue type declared in ``x-queue-type``."""
        return str(dict(self.arguments).get("x-queue-type", "classic"))


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding from an exchange to a queue or to another exchange."""

    source: str
    destination: str
    destination_type: Literal["queue", "exchange"]
    routing_key: str = ""
    arguments: Args = ()


@dataclass(frozen=True, slots=True)
class DelayTier:
    """One delay tier: a queue whose messages return to the jobs exchange after ``ms``."""

    ms: int
    queue: str
    label: str


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    """A consumer group as it exists on the broker."""

    name: str
    spec: GroupSpec
    work_queues: Mapping[Priority, str] = field(hash=False, compare=False)
    dead_letter_queue: str = ""

    @property
    def queue_names(self) -> tuple[str, ...]:
        """Return the distinct work queue names, most urgent lane first."""
        ordered = sorted(self.work_queues.items(), key=lambda item: -item[0].level)
        return tuple(dict.fromkeys(name for _, name in ordered))

    def takes(self, job_type: str) -> bool:
        """Return whether a job of ``job_type`` is routed to this group."""
        return any(routing.matches(pattern, job_type) for pattern in self.spec.jobs)


@dataclass(frozen=True, slots=True)
class CompiledTopology:
    """Every exchange, queue and binding the topology declares, plus lookups over them."""

    namespace: str
    jobs_exchange: str
    retry_exchange: str
    dead_letter_exchange: str
    events_exchange: str
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]
    groups: tuple[CompiledGroup, ...]
    tiers: tuple[DelayTier, ...]
    lane_patterns: tuple[str, ...] = ()  # the jobs of groups that use priority lanes
    webhooks: tuple[tuple[str, WebhookSourceSpec], ...] = ()  # (source name, spec)
    streams: tuple[tuple[str, StreamSourceSpec], ...] = ()  # (source name, spec)
    schedules: tuple[tuple[str, ScheduleSpec], ...] = ()  # (schedule name, spec)
    # The single-active-consumer queue whose one consumer is the scheduler that fires
    # ("": no schedules, no queue).
    scheduler_queue: str = ""

    def group(self, name: str) -> CompiledGroup:
        """Return the group called ``name``; raise ``UnknownGroupError`` naming the groups there are."""
        found = next((g for g in self.groups if g.name == name), None)
        if found is None:
            known = ", ".join(g.name for g in self.groups)
            raise UnknownGroupError(f"no group {excerpt(name)} in the topology; groups: {known}")
        return found

    def group_for(self, job_type: str) -> CompiledGroup | None:
        """Return the group that takes ``job_type``, or ``None`` when no group does."""
        return next((g for g in self.groups if g.takes(job_type)), None)

    def tier_for(self, delay_ms: int) -> DelayTier:
        """Return the longest tier not longer than ``delay_ms`` (the shortest for tiny delays)."""
        return next((t for t in reversed(self.tiers) if t.ms <= delay_ms), self.tiers[0])

    def kept_for(self, job_type: str, dead: bool) -> float:
        """Return the seconds a finished job of ``job_type`` is kept: its group's ``retention`` (no group's: the longest)."""
        # A dead job is kept as long as its DLQ keeps its message, so a replay finds its payload.
        group = self.group_for(job_type)
        specs = [group.spec] if group is not None else [g.spec for g in self.groups]
        ms = max(max(s.retention, (s.dlq.retention or 0) if dead else 0) for s in specs)
        return ms / 1000

    def schedule(self, name: str) -> ScheduleSpec | None:
        """Return the schedule called ``name``, or ``None``."""
        return dict(self.schedules).get(name)

    def job_patterns(self) -> tuple[str, ...]:
        """Return every job type and pattern the groups take."""
        return tuple(p for g in self.groups for p in g.spec.jobs)

    def stream(self, name: str) -> StreamSourceSpec:
        """Return the stream source called ``name``; raise ``TopologyError`` naming those there are."""
        found = dict(self.streams).get(name)
        if found is None:
            known = ", ".join(n for n, _ in self.streams) or "none"
            raise TopologyError(
                f"no stream source {excerpt(name)} in the topology; stream sources: {known}"
            )
        return found


def delivery_limit(poison_deliveries: int) -> int:
    """Return the ``x-delivery-limit`` of quorum work queues, well past the workers' own poison bound."""
    # The workers dead-letter a job started too often themselves, saying why; the broker's
    # limit only ends the loops they cannot (the store down, a worker dying before it counts).
    return 2 * poison_deliveries + 10


def compile_topology(
    spec: TopologySpec, *, poison_deliveries: int | None = None
) -> CompiledTopology:
    """Return every exchange, queue and binding that ``spec`` declares (``poison_deliveries``: ``TASKQ_POISON_DELIVERIES``)."""
    poison = WorkerSettings().poison_deliveries if poison_deliveries is None else poison_deliveries
    ns = spec.namespace
    # Jobs are published to the topic exchange keyed by job type; the headers exchange routes a
    # delayed message to its tier; dead letters go by group to each DLQ; status events fan out.
    jobs, retry, dlx, events = (f"{ns}.{kind}" for kind in ("jobs", "retry", "dlx", "events"))
    exchanges = [
        Exchange(jobs, "topic"),
        Exchange(retry, "headers"),
        Exchange(dlx, "direct"),
        Exchange(events, "topic"),
    ]
    queues: list[Queue] = []
    bindings: list[Binding] = []
    groups = [
        _compile_group(ns, name, group, delivery_limit(poison), exchanges, queues, bindings)
        for name, group in spec.groups.items()
    ]
    # The tiers hold every group's retries: replicated as soon as any group's jobs are, on as
    # many nodes as the most replicated group asks (every node if one leaves it unsaid).
    quorum = [g.priority for g in spec.groups.values() if g.priority.queue_type is QueueType.QUORUM]
    sizes = [p.replicas for p in quorum]
    most = None if None in sizes else max((n for n in sizes if n is not None), default=None)
    kind = {**_QUORUM_DEAD_LETTERING, **_replicas(most)} if quorum else {"x-queue-type": "classic"}
    tiers = []
    for ms in spec.delays.tiers():
        label = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
        tier = DelayTier(ms, f"{ns}.delay.{label}", label)
        tiers.append(tier)
        # Queue-level TTL, one queue per delay: every message in a tier expires in arrival
        # order, so a short delay never waits behind a long one (per-message TTL only
        # expires at the head of a queue: https://www.rabbitmq.com/docs/ttl#per-message-ttl-caveats).
        # No dead-letter routing key: the message returns with its original one (the job type).
        ttl = {"x-message-ttl": ms, "x-dead-letter-exchange": jobs, **kind}
        queues.append(Queue(tier.queue, arguments=args(ttl)))
        bindings.append(_header_binding(retry, tier.queue, names.DELAY_HEADER, tier.label))
    laned = [g for g in groups if g.spec.priority.strategy is PriorityStrategy.LANES]
    scheduler = f"{ns}.scheduler" if spec.schedules else ""
    if scheduler:
        # Of the schedulers consuming it, the broker delivers to one at a time: the one that
        # fires (https://www.rabbitmq.com/docs/consumers#single-active-consumer). It holds
        # only their short-lived leadership ticks.
        leadership: dict[str, ArgValue] = {
            "x-queue-type": "classic",
            "x-single-active-consumer": True,
            "x-max-length": 100,
        }
        queues.append(Queue(scheduler, arguments=args(leadership)))
    return CompiledTopology(
        namespace=ns,
        jobs_exchange=jobs,
        retry_exchange=retry,
        dead_letter_exchange=dlx,
        events_exchange=events,
        exchanges=tuple(exchanges),
        queues=tuple(queues),
        bindings=tuple(bindings),
        groups=tuple(groups),
        tiers=tuple(tiers),
        lane_patterns=tuple(p for g in laned for p in g.spec.jobs),
        webhooks=tuple(sorted(spec.webhooks.items())),
        streams=tuple(sorted(spec.streams.items())),
        schedules=tuple(sorted(spec.schedules.items())),
        scheduler_queue=scheduler,
    )


def _header_binding(source: str, queue: str, header: str, value: str) -> Binding:
    return Binding(source, queue, "queue", "", args({"x-match": "all", header: value}))


# Quorum queues dead-letter with confirms only under reject-publish overflow
# (https://www.rabbitmq.com/docs/quorum-queues#dead-lettering).
_QUORUM_DEAD_LETTERING: dict[str, ArgValue] = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def _replicas(replicas: int | None) -> dict[str, ArgValue]:
    """Return the argument that places a quorum queue on ``replicas`` nodes (none: on every node)."""
    return {} if replicas is None else {"x-quorum-initial-group-size": replicas}


def _compile_group(
    ns: str,
    name: str,
    group: GroupSpec,
    limit: int,
    exchanges: list[Exchange],
    queues: list[Queue],
    bindings: list[Binding],
) -> CompiledGroup:
    jobs, dlx, prefix = f"{ns}.jobs", f"{ns}.dlx", f"{ns}.{name}"
    dlq = f"{prefix}.dlq"
    # A full DLQ refuses what comes (reject-publish nacks a publish) rather than dropping its
    # oldest dead letter, the default overflow.
    kept = {
        # A quorum group's dead letters are replicated like its jobs: a classic DLQ lives on
        # one node, and while that node is down every dead letter to it is unroutable.
        "x-queue-type": group.priority.queue_type.value,
        "x-message-ttl": group.dlq.retention,
        "x-max-length": group.dlq.max_length,
        "x-overflow": "reject-publish",
        **_replicas(group.priority.replicas),
    }
    queues.append(Queue(dlq, arguments=args(kept)))
    bindings.append(Binding(dlx, dlq, "queue", name))
    # Every work queue dead-letters to the group's DLQ, so a rejection is never dropped.
    dead_letter = {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": name}
    if group.priority.strategy is PriorityStrategy.QUEUE:
        work_args: dict[str, ArgValue] = {
            "x-queue-type": "classic",
            "x-max-priority": MAX_PRIORITY,
            **dead_letter,
        }
        queues.append(Queue(prefix, arguments=args(work_args)))
        bindings.extend(Binding(jobs, prefix, "queue", pattern) for pattern in group.jobs)
        return CompiledGroup(name, group, dict.fromkeys(Priority, prefix), dlq)

    lanes = f"{prefix}.lanes"
    exchanges.append(Exchange(lanes, "headers", internal=True))
    bindings.extend(Binding(jobs, lanes, "exchange", pattern) for pattern in group.jobs)
    lane_args: dict[str, ArgValue] = {"x-queue-type": "classic", **dead_letter}
    if group.priority.queue_type is QueueType.QUORUM:
        # A message that keeps coming back (its worker dies each time) is dead-lettered by the
        # broker at the limit, with x-death reason delivery_limit.
        lane_args |= {**_QUORUM_DEAD_LETTERING, "x-delivery-limit": limit}
        lane_args |= _replicas(group.priority.replicas)
    work = {p: f"{prefix}.{p.value}" for p in Priority}
    for priority, queue in work.items():
        queues.append(Queue(queue, arguments=args(lane_args)))
        bindings.append(_header_binding(lanes, queue, names.PRIORITY_HEADER, priority.value))
    return CompiledGroup(name, group, work, dlq)

"""Compile a validated ``TopologySpec`` into the exact exchanges, queues and bindings to declare."""

from __future__ import annotations

from topology import names
from topology.model import (
    Binding,
    CompiledGroup,
    CompiledTopology,
    DelayTier,
    Exchange,
    Queue,
    args,
)
from topology.spec import (
    MAX_PRIORITY,
    GroupSpec,
    Priority,
    PriorityStrategy,
    QueueType,
    TopologySpec,
)


def compile_topology(spec: TopologySpec) -> CompiledTopology:
    """Return every exchange, queue and binding that ``spec`` declares."""
    ns = spec.namespace
    jobs, retry = names.jobs_exchange(ns), names.retry_exchange(ns)
    dlx, events = names.dead_letter_exchange(ns), names.events_exchange(ns)
    exchanges = [
        Exchange(jobs, "topic"),
        Exchange(retry, "headers"),
        Exchange(dlx, "direct"),
        Exchange(events, "topic"),
    ]
    queues: list[Queue] = []
    bindings: list[Binding] = []
    groups = []
    for name, group in spec.groups.items():
        built = _compile_group(ns, name, group, exchanges, queues, bindings)
        groups.append(built)
    tiers = []
    for ms in spec.delays.tiers():
        tier = DelayTier(ms, names.delay_queue(ns, ms), names.delay_label(ms))
        tiers.append(tier)
        # Queue-level TTL, one queue per delay: every message in a tier expires in arrival
        # order, so a short delay never waits behind a long one (per-message TTL only
        # expires at the head of a queue: https://www.rabbitmq.com/docs/ttl#per-message-ttl-caveats).
        # No dead-letter routing key: the message returns with its original one (the job type).
        queues.append(
            Queue(
                tier.queue,
                arguments=args(
                    {"x-queue-type": "classic", "x-message-ttl": ms, "x-dead-letter-exchange": jobs}
                ),
            )
        )
        bindings.append(
            Binding(
                retry,
                tier.queue,
                "queue",
                "",
                args({"x-match": "all", names.DELAY_HEADER: tier.label}),
            )
        )
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
        lane_patterns=tuple(
            p
            for g in groups
            if g.spec.priority.strategy is PriorityStrategy.LANES
            for p in g.spec.jobs
        ),
        webhooks=tuple(sorted(spec.webhooks.items())),
    )


def _compile_group(
    ns: str,
    name: str,
    group: GroupSpec,
    exchanges: list[Exchange],
    queues: list[Queue],
    bindings: list[Binding],
) -> CompiledGroup:
    jobs, dlx = names.jobs_exchange(ns), names.dead_letter_exchange(ns)
    dlq = names.dead_letter_queue(ns, name)
    queues.append(
        Queue(
            dlq, arguments=args({"x-queue-type": "classic", "x-message-ttl": group.dlq.retention})
        )
    )
    bindings.append(Binding(dlx, dlq, "queue", name))
    # Every work queue dead-letters to the group's DLQ, so a rejection is never dropped.
    dead_letter = {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": name}
    if group.priority.strategy is PriorityStrategy.QUEUE:
        queue = names.work_queue(ns, name)
        queues.append(
            Queue(
                queue,
                arguments=args(
                    {"x-queue-type": "classic", "x-max-priority": MAX_PRIORITY, **dead_letter}
                ),
            )
        )
        bindings.extend(Binding(jobs, queue, "queue", pattern) for pattern in group.jobs)
        return CompiledGroup(name, group, dict.fromkeys(Priority, queue), dlq)

    lanes = names.lanes_exchange(ns, name)
    exchanges.append(Exchange(lanes, "headers", internal=True))
    bindings.extend(Binding(jobs, lanes, "exchange", pattern) for pattern in group.jobs)
    lane_args = {"x-queue-type": group.priority.queue_type.value, **dead_letter}
    if group.priority.queue_type is QueueType.QUORUM:
        # Quorum queues dead-letter with confirms only under reject-publish overflow
        # (https://www.rabbitmq.com/docs/quorum-queues#dead-lettering).
        lane_args |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    work: dict[Priority, str] = {}
    for priority in Priority:
        queue = names.lane_queue(ns, name, priority.value)
        work[priority] = queue
        queues.append(Queue(queue, arguments=args(lane_args)))
        bindings.append(
            Binding(
                lanes,
                queue,
                "queue",
                "",
                args({"x-match": "all", names.PRIORITY_HEADER: priority.value}),
            )
        )
    return CompiledGroup(name, group, work, dlq)

"""What the broker is (its RabbitMQ version and feature flags), and what that means for quorum groups."""

from __future__ import annotations

import re
from dataclasses import dataclass

from topology.compiled import CompiledTopology
from topology.errors import BrokerUnsupportedError
from topology.spec import QueueType

QUORUM_RELEASE = (3, 10)
"""The first release whose quorum queues take a TTL and dead-letter at least once."""
NATIVE_PRIORITIES = (4, 0)
"""The first release whose quorum queues keep two priority levels (normal and high)."""
# At-least-once dead-lettering needs stream_queue on 3.10 to 3.13; 4.x has both flags always on
# (https://www.rabbitmq.com/docs/3.13/quorum-queues#dead-lettering).
QUORUM_FLAGS = ("quorum_queue", "stream_queue")


@dataclass(frozen=True, slots=True)
class BrokerServer:
    """The RabbitMQ version a broker runs and its enabled feature flags (``None``: not readable)."""

    version: str
    flags: frozenset[str] | None

    @property
    def release(self) -> tuple[int, ...]:
        """Return the version's leading numbers, e.g. ``(3, 10, 8)`` for ``3.10.8``."""
        return tuple(int(n) for n in re.findall(r"\d+", self.version.split("-")[0])[:3])


def choices(topology: CompiledTopology, server: BrokerServer) -> tuple[str, ...]:
    """Return a line per quorum group (and the delay tiers) saying what it gets on ``server``, which must hold them."""
    quorum = [g for g in topology.groups if g.spec.priority.queue_type is QueueType.QUORUM]
    if not quorum:
        return ()
    named = f"RabbitMQ {server.version}"
    off = [f for f in QUORUM_FLAGS if server.flags is not None and f not in server.flags]
    if server.release < QUORUM_RELEASE or off:
        why = f"has feature flag {', '.join(off)} off" if off else "is older than 3.10"
        raise BrokerUnsupportedError(
            f"group {quorum[0].name} declares queue_type: quorum, but {named} {why}; quorum "
            "groups need 3.10 or later with the quorum_queue and stream_queue flags enabled "
            "(rabbitmqctl enable_feature_flag all), or use queue_type: classic"
        )
    levels = (
        f"{named} keeps 2 native levels, the lanes keep all 4"
        if server.release >= NATIVE_PRIORITIES
        else f"{named} has no quorum priorities"
    )
    lines = []
    for group in quorum:
        arguments = next(q.arguments for q in topology.queues if q.name in group.queue_names)
        limit = dict(arguments)["x-delivery-limit"]
        lanes = len(group.queue_names)
        replicas = group.spec.priority.replicas
        placed = "" if replicas is None else f", {replicas} replicas each"
        lines.append(
            f"group {group.name}: quorum, {lanes} priority lanes ({levels}), delivery limit {limit}{placed}"
        )
    lines.append(
        "delay tiers: quorum, as the quorum groups are (a node's loss keeps their retries)"
    )
    return tuple(lines)

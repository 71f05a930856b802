"""Where a message goes: the exchange, routing key and headers of each kind of publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from topology import names
from topology.envelope import Envelope
from topology.model import CompiledTopology


@dataclass(frozen=True, slots=True)
class Route:
    """An exchange, a routing key and the headers a publish adds for routing."""

    exchange: str
    routing_key: str
    headers: dict[str, str | int] = field(default_factory=dict, hash=False)


def job_route(topology: CompiledTopology, envelope: Envelope) -> Route:
    """Return the route of a job to be run now: the jobs exchange, keyed by job type.

    Jobs of a group with priority lanes also carry the priority header their lanes exchange
    routes on; other jobs need nothing beyond the AMQP priority property.
    """
    if topology.lane_patterns and topology.in_lanes(envelope.type):
        headers: dict[str, str | int] = {names.PRIORITY_HEADER: envelope.priority.value}
        return Route(topology.jobs_exchange, envelope.type, headers)
    return Route(topology.jobs_exchange, envelope.type)


def delay_route(topology: CompiledTopology, envelope: Envelope, delay_ms: int) -> Route:
    """Return the route through the delay tier that fits ``delay_ms``.

    The message keeps the job type as its routing key, so when the tier's TTL expires RabbitMQ
    dead-letters it back to the jobs exchange and on to the group's work queue.
    """
    tier = topology.tier_for(delay_ms)
    headers = {**job_route(topology, envelope).headers, names.DELAY_HEADER: tier.label}
    return Route(topology.retry_exchange, envelope.type, headers)


def next_hop(topology: CompiledTopology, envelope: Envelope, now: datetime) -> Route | None:
    """Return where a job that reached its work queue before ``not_before`` goes next, if anywhere.

    Delays are composed from tiers: the first hop takes the longest tier that fits, and each
    early arrival is sent on through the longest tier that fits what remains (the shortest
    one for a remainder below the resolution). So a job never runs early, and runs at most
    one resolution, plus a few milliseconds per hop, late.
    """
    if envelope.not_before is None:
        return None
    remaining = envelope.not_before - now
    if remaining <= timedelta(0):
        return None
    return delay_route(topology, envelope, int(remaining.total_seconds() * 1000))

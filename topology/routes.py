"""Where a message goes: the exchange, routing key and headers of each kind of publish."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Return the route of a job to be run now: the jobs exchange, keyed by job type."""
    return Route(topology.jobs_exchange, envelope.type)


def delay_route(topology: CompiledTopology, envelope: Envelope, delay_ms: int) -> Route:
    """Return the route through the delay tier that fits ``delay_ms``.

    The message keeps the job type as its routing key, so when the tier's TTL expires RabbitMQ
    dead-letters it back to the jobs exchange and on to the group's work queue.
    """
    tier = topology.tier_for(delay_ms)
    return Route(topology.retry_exchange, envelope.type, {names.DELAY_HEADER: tier.label})

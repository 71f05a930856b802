"""Where a message goes: the exchange, routing key and headers of each kind of publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from topology import names, routing
from topology.compiled import CompiledTopology
from topology.envelope import Envelope


@dataclass(frozen=True, slots=True)
class Route:
    """An exchange, a routing key and the headers a publish adds for routing."""

    exchange: str
    routing_key: str
    headers: dict[str, str | int] = field(default_factory=dict, hash=False)


def job_route(topology: CompiledTopology, envelope: Envelope) -> Route:
    """Return the route of a job to be run now: the jobs exchange, keyed by job type."""
    if any(routing.matches(pattern, envelope.type) for pattern in topology.lane_patterns):
        headers: dict[str, str | int] = {names.PRIORITY_HEADER: envelope.priority.value}
        return Route(topology.jobs_exchange, envelope.type, headers)
    return Route(topology.jobs_exchange, envelope.type)


def delay_route(topology: CompiledTopology, envelope: Envelope, delay_ms: int) -> Route:
    """Return the route through the delay tier that fits ``delay_ms``."""
    tier = topology.tier_for(delay_ms)
    headers = {**job_route(topology, envelope).headers, names.DELAY_HEADER: tier.label}
    return Route(topology.retry_exchange, envelope.type, headers)


def next_hop(topology: CompiledTopology, envelope: Envelope, now: datetime) -> Route | None:
    """Return where a job that reached its work queue before ``not_before`` goes next, if anywhere."""
    remaining = None if envelope.not_before is None else envelope.not_before - now
    if remaining is None or remaining <= timedelta(0):
        return None
    return delay_route(topology, envelope, int(remaining.total_seconds() * 1000))

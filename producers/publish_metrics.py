"""The publisher's Prometheus metric: how long the broker takes to confirm a publish."""

from __future__ import annotations

from prometheus_client import REGISTRY, Histogram

from topology.compiled import CompiledTopology

CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CONFIRM_SECONDS = Histogram(
    "taskq_publish_confirm_seconds",
    "Time from publish to the broker's confirm, by the kind of exchange published to.",
    ["exchange_kind"],
    buckets=CONFIRM_BUCKETS,
    registry=REGISTRY,
)


def exchange_kind(topology: CompiledTopology, exchange: str) -> str:
    """Return the bounded label of ``exchange``: jobs, retry or dlx."""
    if exchange == topology.retry_exchange:
        return "retry"
    if exchange == topology.dead_letter_exchange:
        return "dlx"
    return "jobs"  # the jobs exchange, or a group's internal lanes exchange behind it

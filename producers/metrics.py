"""A producer's Prometheus metrics: submissions by outcome, and how long the broker takes to confirm."""

from __future__ import annotations

from telemetry.metrics import MetricSet, counter, gauge, histogram
from topology.compiled import CompiledTopology
from topology.errors import (
    BlobUnavailableError,
    BrokerUnavailableError,
    ContractError,
    IdempotencyInFlightError,
    JobRejectedError,
    PublishError,
    StoreUnavailableError,
    TaskqError,
)

CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A dependency is down: retrying later may succeed (HTTP 503).
UNAVAILABLE = (BrokerUnavailableError, PublishError, StoreUnavailableError, BlobUnavailableError)
UNKNOWN_GROUP = "unknown"  # a job type no group takes: the type itself is client input


class ProducerMetrics(MetricSet):
    """The submitter's outcome counter and the publisher's confirm latency."""

    submissions = counter(
        "taskq_job_submissions_total",
        "Job submissions by source (api, client, webhook:<name>), group, priority and outcome.",
        "source group priority outcome",
    )
    confirm_seconds = histogram(
        "taskq_publish_confirm_seconds",
        "Time from publish to the broker's confirm, by the kind of exchange published to.",
        "exchange_kind",
        buckets=CONFIRM_BUCKETS,
    )


class SchedulerMetrics(MetricSet):
    """What the scheduler fires, when each schedule last and next runs, and which replica leads."""

    runs = counter(
        "taskq_schedule_runs_total",
        "Occurrences of each schedule by outcome: fired (a job made), replayed (made already, "
        "by this or another replica), failed (to be tried again).",
        "schedule outcome",
    )
    last_run = gauge(
        "taskq_schedule_last_run_timestamp_seconds",
        "The due time of each schedule's last occurrence fired (Unix seconds).",
        "schedule",
        multiprocess_mode="max",
    )
    next_run = gauge(
        "taskq_schedule_next_run_timestamp_seconds",
        "The due time of each schedule's next occurrence (Unix seconds; 0 while paused).",
        "schedule",
        multiprocess_mode="livemax",
    )
    leader = gauge(
        "taskq_scheduler_leader",
        "1 while this scheduler replica is the one that fires (the leadership queue's active consumer).",
        multiprocess_mode="livesum",
    )


def outcome_of(error: TaskqError | None, *, replayed: bool = False) -> str:
    """Return the bounded outcome label of a submission."""
    if error is None:
        return "replayed" if replayed else "accepted"
    if isinstance(error, JobRejectedError | ContractError):
        return "rejected"
    if isinstance(error, IdempotencyInFlightError):
        return "conflict"
    if isinstance(error, UNAVAILABLE):
        return "unavailable"
    return "error"


def exchange_kind(topology: CompiledTopology, exchange: str) -> str:
    """Return the bounded label of ``exchange``: jobs, retry or dlx."""
    if exchange == topology.retry_exchange:
        return "retry"
    if exchange == topology.dead_letter_exchange:
        return "dlx"
    return "jobs"  # the jobs exchange, or a group's internal lanes exchange behind it

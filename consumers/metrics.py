"""A worker's Prometheus metrics: jobs started and completed, run time, queue wait, in flight, breakers."""

from __future__ import annotations

from telemetry.metrics import MetricSet, counter, gauge, histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
UNKNOWN_TYPE = "unknown"  # the label of a message no handler takes (or that cannot be read)


class WorkerMetrics(MetricSet):
    """The worker's counters, histograms and gauges."""

    started = counter(
        "taskq_jobs_started_total",
        "Handler runs started, by group and job-type pattern.",
        "group type",
    )
    completed = counter(
        "taskq_jobs_completed_total",
        "Runs finished, by group, job-type pattern and outcome (succeeded, retried, dead).",
        "group type outcome",
    )
    cancelled = counter(
        "taskq_jobs_cancelled_total",
        "Deliveries acked unrun because the job was cancelled.",
        "group",
    )
    duration = histogram(
        "taskq_job_duration_seconds",
        "Handler run time.",
        "group priority",
        buckets=DURATION_BUCKETS,
    )
    queue_wait = histogram(
        "taskq_job_queue_wait_seconds",
        "Time from enqueue (or the job's not_before) to the start of its run.",
        "group priority",
        buckets=WAIT_BUCKETS,
    )
    in_flight = gauge(
        "taskq_jobs_in_flight",
        "Jobs whose handler is running.",
        "group",
        multiprocess_mode="livesum",
    )
    # Labels are topology group names and handlers' declared dependency names: bounded.
    breaker_state = gauge(
        "taskq_breaker_state",
        "A dependency's circuit breaker in this worker: 0 closed, 1 half-open, 2 open.",
        "group dependency",
    )
    breaker_transitions = counter(
        "taskq_breaker_transitions_total",
        "Circuit breaker state changes, by the state entered.",
        "group dependency to",
    )

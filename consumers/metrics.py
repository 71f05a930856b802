"""A worker's Prometheus metrics: jobs started and completed, run time, queue wait, in flight."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
UNKNOWN_TYPE = "unknown"  # the label of a message no handler takes (or that cannot be read)


class WorkerMetrics:
    """The worker's counters, histograms and gauge, on one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.started = Counter(
            "taskq_jobs_started_total",
            "Handler runs started, by group and job-type pattern.",
            ["group", "type"],
            registry=registry,
        )
        self.completed = Counter(
            "taskq_jobs_completed_total",
            "Runs finished, by group, job-type pattern and outcome (succeeded, retried, dead).",
            ["group", "type", "outcome"],
            registry=registry,
        )
        self.cancelled = Counter(
            "taskq_jobs_cancelled_total",
            "Deliveries acked unrun because the job was cancelled.",
            ["group"],
            registry=registry,
        )
        self.duration = Histogram(
            "taskq_job_duration_seconds",
            "Handler run time.",
            ["group", "priority"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "taskq_job_queue_wait_seconds",
            "Time from enqueue (or the job's not_before) to the start of its run.",
            ["group", "priority"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "taskq_jobs_in_flight",
            "Jobs whose handler is running.",
            ["group"],
            registry=registry,
            multiprocess_mode="livesum",
        )


_process: WorkerMetrics | None = None


def process_metrics() -> WorkerMetrics:
    """Return this process's worker metrics (on the default registry), created on first use."""
    global _process
    if _process is None:
        _process = WorkerMetrics()
    return _process

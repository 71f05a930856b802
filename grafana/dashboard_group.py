"""One consumer group in detail: its queue, outcomes by job type, latency, breakers."""

from __future__ import annotations

from panels import (
    OLDEST_JOB_SLO_SECONDS,
    Json,
    Layout,
    dashboard,
    label_variable,
    quantiles,
    stat,
    thresholds,
    timeseries,
)
from promql import (
    ANY_IS_WORTH_A_LOOK,
    BACKLOG,
    BREAKER,
    BREAKER_NAMES,
    DLQ,
    ERROR_RATIO,
    GT,
    RATE,
    SLO,
    G,
    failed_ratio,
)


def group_now(lay: Layout) -> None:
    """Add the group's single numbers."""
    lay.row("Right now")
    lay.add(
        stat(
            "Backlog",
            "Ready plus unacknowledged messages.",
            f"sum(taskq_queue_messages{{{G}, {BACKLOG}}})",
        ),
        stat(
            "Oldest waiting job",
            f"The SLO is {OLDEST_JOB_SLO_SECONDS} s.",
            f"max(taskq_queue_oldest_message_age_seconds{{{G}}})",
            unit="s",
            limits=SLO,
        ),
        stat(
            "Consumers",
            "Workers consuming the work queue.",
            f"max(taskq_queue_consumers{{{G}}})",
            limits=thresholds((None, "red"), (1, "green")),
        ),
        stat(
            "Jobs in flight",
            "Handlers running now, over all workers.",
            f"sum(taskq_jobs_in_flight{{{G}}})",
        ),
        stat(
            "Dead letters",
            "Messages in the group's DLQ.",
            f"max(taskq_queue_messages{{{G}, {DLQ}}})",
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        stat(
            "Workers wanted",
            "Workers the autoscaler wants for this group.",
            f"max(taskq_autoscaler_desired_workers{{{G}}})",
        ),
        width=4,
        height=4,
    )


def group_runs(lay: Layout) -> None:
    """Add the queue's two halves, runs by outcome, and the per-type breakdown."""
    lay.row("Queue and runs")
    runs = [
        (f"sum(rate(taskq_jobs_started_total{{{GT}}}{RATE}))", "started"),
        (f"sum by (outcome) (rate(taskq_jobs_completed_total{{{GT}}}{RATE}))", "{{outcome}}"),
        (f"sum(rate(taskq_jobs_cancelled_total{{{G}}}{RATE}))", "cancelled (acked unrun)"),
    ]
    lay.add(
        timeseries(
            "Ready vs unacked",
            "Ready: waiting for a worker. Unacked: delivered to a worker, running or prefetched.",
            [(f"max by (kind) (taskq_queue_messages{{{G}, {BACKLOG}}})", "{{kind}}")],
            stack=True,
        ),
        timeseries(
            "Runs started and finished",
            "Handler runs started, finished by outcome, and cancelled jobs skipped.",
            runs,
            unit="ops",
        ),
    )
    lay.row("By job type")
    by_type = f"sum by (type, outcome) (rate(taskq_jobs_completed_total{{{GT}}}{RATE}))"
    lay.add(
        timeseries(
            "Outcomes by job type",
            "Finished runs per job type and outcome.",
            [(by_type, "{{type}} {{outcome}}")],
            unit="ops",
        ),
        timeseries(
            "Failed-run ratio by job type",
            "Share of each job type's runs that failed.",
            [(failed_ratio(GT, "type"), "{{type}}")],
            unit="percentunit",
            limits=ERROR_RATIO,
            show_limits=True,
        ),
    )


def group_latency(lay: Layout) -> None:
    """Add queue wait and run time quantiles, waits by priority, and submissions."""
    lay.row("Latency")
    submitted = f"sum by (priority) (rate(taskq_jobs_submitted_total{{{G}}}{RATE}))"
    lay.add(
        timeseries(
            "Queue wait",
            "p50/p95/p99 of the wait before a worker started a job.",
            quantiles("taskq_job_queue_wait_seconds", G),
            unit="s",
            limits=SLO,
            show_limits=True,
        ),
        timeseries(
            "Run time",
            "p50/p95/p99 of handler run time.",
            quantiles("taskq_job_duration_seconds", G),
            unit="s",
        ),
        timeseries(
            "Queue wait p95 by priority",
            "Low-priority jobs starve first under a backlog: their wait shows it.",
            quantiles("taskq_job_queue_wait_seconds", G, "priority", (0.95,)),
            unit="s",
        ),
        timeseries(
            "Submissions by priority",
            "Jobs accepted by the HTTP API for this group, per priority.",
            [(submitted, "{{priority}}")],
            unit="ops",
        ),
    )


def group_dependencies(lay: Layout) -> None:
    """Add the circuit breakers of the group's dependencies."""
    lay.row("Dependencies")
    transitions = (
        f"sum by (dependency, to) (increase(taskq_breaker_transitions_total{{{G}}}{RATE}))"
    )
    lay.add(
        timeseries(
            "Circuit breaker state",
            "Worst state per dependency over the group's workers: 0 closed, 1 half-open, 2 open.",
            [(f"max by (dependency) (taskq_breaker_state{{{G}}})", "{{dependency}}")],
            limits=BREAKER,
            extra={"max": 2, "mappings": BREAKER_NAMES},
        ),
        timeseries(
            "Breaker transitions",
            "Breaker state changes; open/half-open flapping means the dependency is still failing.",
            [(transitions, "{{dependency}} to {{to}}")],
        ),
    )


def group_drill_down() -> Json:
    """Return one group in detail: its queue, outcomes by job type, latency, breakers."""
    group = label_variable(
        "group",
        "Group",
        "label_values(taskq_queue_messages, group)",
        multi=False,
        include_all=False,
    )
    types = label_variable(
        "type", "Job type", f"label_values(taskq_jobs_started_total{{{G}}}, type)"
    )
    return dashboard(
        "taskq-group",
        "taskq group drill-down",
        "One consumer group in detail.",
        [group, types],
        (group_now, group_runs, group_latency, group_dependencies),
    )

"""The on-call overview: is work flowing, is anything stuck or failing."""

from __future__ import annotations

from panels import (
    OLDEST_JOB_SLO_SECONDS,
    PUBLISH_CONFIRM_P99_SECONDS,
    Json,
    Layout,
    dashboard,
    quantiles,
    stat,
    table,
    thresholds,
    timeseries,
)
from promql import (
    ANY_IS_BAD,
    ANY_IS_WORTH_A_LOOK,
    BACKLOG,
    DLQ,
    ERROR_RATIO,
    FAILED,
    GROUPS,
    RATE,
    SLO,
    TO_GROUP,
    G,
    failed_ratio,
    per_group,
)


def overview_now(lay: Layout) -> None:
    """Add the overview's single numbers and the firing alerts."""
    lay.row("Right now")
    lay.add(
        stat(
            "Backlog",
            "Jobs waiting or running in the selected groups' work queues.",
            f"sum(taskq_queue_messages{{{G}, {BACKLOG}}})",
        ),
        stat(
            "Oldest waiting job",
            f"Age of the oldest job at the head of a work queue; the SLO is {OLDEST_JOB_SLO_SECONDS} s.",
            f"max(taskq_queue_oldest_message_age_seconds{{{G}}})",
            unit="s",
            limits=SLO,
        ),
        stat(
            "Dead letters",
            "Jobs waiting in dead-letter queues for a decision (replay or purge).",
            f"sum(taskq_queue_messages{{{G}, {DLQ}}})",
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        stat(
            "Groups without consumers",
            "Groups whose work queue has no consumer: nothing runs their jobs.",
            f"count(max by (group) (taskq_queue_consumers{{{G}}}) == 0) or vector(0)",
            limits=ANY_IS_BAD,
        ),
        stat(
            "Open circuit breakers",
            "Dependencies whose breaker is open in at least one worker.",
            f"count(max by (group, dependency) (taskq_breaker_state{{{G}}}) == 2) or vector(0)",
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        stat(
            "Failed runs",
            "Share of handler runs in the last 5 minutes that failed (retried or dead-lettered).",
            failed_ratio(G, window="[5m]"),
            unit="percentunit",
            limits=ERROR_RATIO,
        ),
        width=4,
        height=4,
    )
    alerts = table(
        "Firing taskq alerts",
        "Alerts of grafana/rules/taskq-alerts.yaml firing now (empty is good); each has a runbook in docs/runbooks/.",
        'ALERTS{alertstate="firing", alertname=~"Taskq.+"}',
    )
    lay.add(alerts, width=24, height=5)


def overview_flow(lay: Layout) -> None:
    """Add arrivals against completions, backlog, oldest job and consumers per group."""
    lay.row("Flow")
    flow = [
        (
            f"sum(rate(taskq_jobs_submitted_total{{{G}}}{RATE}))",
            "arriving (accepted by the HTTP API)",
        ),
        (
            f'sum(rate(taskq_jobs_completed_total{{{G}, outcome=~"succeeded|dead"}}{RATE}))',
            "completing (succeeded or dead)",
        ),
        (f"sum(rate(taskq_jobs_started_total{{{G}}}{RATE}))", "runs started (retries included)"),
    ]
    lay.add(
        timeseries(
            "Jobs arriving vs completing",
            "When arrivals stay above completions the backlog grows.",
            flow,
            unit="ops",
        ),
        timeseries(
            "Backlog per group",
            "Ready plus unacknowledged messages per group; click a series to open the group.",
            per_group(f"sum by (group) (taskq_queue_messages{{{G}, {BACKLOG}}})"),
            links=TO_GROUP,
        ),
        timeseries(
            "Oldest waiting job per group",
            f"Age of the job at the head of each work queue; red above the {OLDEST_JOB_SLO_SECONDS} s SLO.",
            per_group(f"max by (group) (taskq_queue_oldest_message_age_seconds{{{G}}})"),
            unit="s",
            limits=SLO,
            show_limits=True,
            links=TO_GROUP,
        ),
        timeseries(
            "Consumers per group",
            "Workers consuming each group's work queue (as the broker counts them).",
            per_group(f"max by (group) (taskq_queue_consumers{{{G}}})"),
            links=TO_GROUP,
        ),
    )


def overview_failures(lay: Layout) -> None:
    """Add failed runs, the failure ratio, DLQ depth and refused webhooks."""
    lay.row("Failures")
    failures = f"sum by (group, outcome) (rate(taskq_jobs_completed_total{{{G}, {FAILED}}}{RATE}))"
    refused = f'sum by (source, result) (rate(taskq_webhook_deliveries_total{{result!~"accepted|replayed"}}{RATE}))'
    lay.add(
        timeseries(
            "Retries and dead letters per second",
            "Failed runs: retried (another attempt later) or dead (moved to the DLQ).",
            [(failures, "{{group}} {{outcome}}")],
            unit="ops",
        ),
        timeseries(
            "Failed-run ratio per group",
            "Share of finished runs that failed; the alert fires above 10 %.",
            per_group(failed_ratio(G, "group")),
            unit="percentunit",
            limits=ERROR_RATIO,
            show_limits=True,
            links=TO_GROUP,
        ),
        timeseries(
            "DLQ depth per group",
            "Dead letters waiting per group; see the DLQ dashboard to replay them.",
            per_group(f"max by (group) (taskq_queue_messages{{{G}, {DLQ}}})"),
            links=TO_GROUP,
        ),
        timeseries(
            "Webhook deliveries refused or failed",
            "Webhook deliveries answered with an error: bad signature or timestamp, malformed, taskq unavailable.",
            [(refused, "{{source}} {{result}}")],
            unit="ops",
        ),
    )


def overview_latency(lay: Layout) -> None:
    """Add queue wait, run time and publish confirm quantiles, and the HTTP API's health."""
    lay.row("Latency")
    lay.add(
        timeseries(
            "Queue wait (enqueue to start)",
            "How long jobs waited before a worker started them (from not_before for delayed jobs).",
            quantiles("taskq_job_queue_wait_seconds", G),
            unit="s",
            limits=SLO,
            show_limits=True,
        ),
        timeseries(
            "Run time (handler duration)",
            "How long handlers ran.",
            quantiles("taskq_job_duration_seconds", G),
            unit="s",
        ),
        timeseries(
            "Publish confirm latency (p99)",
            "Time from publishing to the broker's confirm, per exchange; above 1 s the broker is struggling.",
            quantiles("taskq_publish_confirm_seconds", "", "exchange_kind", (0.99,)),
            unit="s",
            limits=thresholds((None, "green"), (PUBLISH_CONFIRM_P99_SECONDS, "red")),
            show_limits=True,
        ),
        width=8,
    )
    lay.row("HTTP API")
    errors = f'sum by (route, status) (rate(taskq_api_requests_total{{status=~"5.."}}{RATE}))'
    lay.add(
        timeseries(
            "HTTP API server errors",
            "5xx answers of the job API per route; 503 means the broker or a store is down.",
            [(errors, "{{route}} {{status}}")],
            unit="reqps",
        ),
        timeseries(
            "HTTP API latency (p99)",
            "Time to answer per route; POST /jobs includes the broker's confirm.",
            quantiles("taskq_api_request_duration_seconds", "", "route", (0.99,)),
            unit="s",
        ),
    )


def overview_doors(lay: Layout) -> None:
    """Add the gRPC job API's trouble and latency, and the stream sources' flow and backlog."""
    lay.row("gRPC API and stream sources")
    trouble = f'sum by (method, code) (rate(taskq_grpc_requests_total{{code=~"UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED"}}{RATE}))'
    entries = f"sum by (source, outcome) (rate(taskq_stream_entries_total{RATE}))"
    backlog = [
        ("max by (source) (taskq_stream_backlog)", "{{source}} backlog"),
        ("max by (source) (taskq_stream_paused)", "{{source}} paused"),
    ]
    lay.add(
        timeseries(
            "gRPC API server errors",
            "Calls of the gRPC job API that ended UNAVAILABLE (the broker or a store is down), "
            "INTERNAL or DEADLINE_EXCEEDED, per method.",
            [(trouble, "{{method}} {{code}}")],
            unit="reqps",
        ),
        timeseries(
            "gRPC API latency (p99)",
            "Time to answer per method; Submit includes the broker's confirm.",
            quantiles("taskq_grpc_request_duration_seconds", 'method!="Watch"', "method", (0.99,)),
            unit="s",
        ),
        timeseries(
            "Stream source entries",
            "Stream entries per second by source and outcome: accepted, replayed (read again "
            "after a crash), dead_lettered (made no job), retried (the broker or a store down).",
            [(entries, "{{source}} {{outcome}}")],
            unit="ops",
        ),
        timeseries(
            "Stream source backlog",
            "Entries of each source's stream not yet acknowledged (unread or pending), and 1 "
            "while the source stops reading because the broker blocks publishers.",
            backlog,
        ),
        width=6,
    )


def overview() -> Json:
    """Return the on-call overview: is work flowing, is anything stuck or failing."""
    return dashboard(
        "taskq-overview",
        "taskq on-call overview",
        "Is work flowing, is anything stuck or failing: start here.",
        [GROUPS],
        (overview_now, overview_flow, overview_failures, overview_latency, overview_doors),
    )

"""Dead letters, delay tiers and replay."""

from __future__ import annotations

from panels import Json, Layout, dashboard, label_variable, stat, timeseries
from promql import ANY_IS_WORTH_A_LOOK, DLQ, GROUPS, GT, RATE, TO_GROUP, G, per_group


def dlq_now(lay: Layout) -> None:
    """Add the dead-letter and retry single numbers."""
    lay.row("Right now")
    lay.add(
        stat(
            "Dead letters waiting",
            "Messages in the selected groups' DLQs.",
            f"sum(taskq_queue_messages{{{G}, {DLQ}}})",
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        stat(
            "Dead-lettered in the last hour",
            "Runs that ended in the DLQ over the last hour.",
            f'sum(increase(taskq_jobs_completed_total{{{GT}, outcome="dead"}}[1h]))',
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        stat(
            "Retries scheduled in the last hour",
            "Failed runs sent back through a delay tier over the last hour.",
            f'sum(increase(taskq_jobs_completed_total{{{GT}, outcome="retried"}}[1h]))',
        ),
        stat(
            "Messages in delay tiers",
            "Retries and delayed jobs waiting in the delay tiers (all groups).",
            "sum(taskq_retry_tier_messages)",
        ),
        width=6,
        height=4,
    )


def dlq_dead_letters(lay: Layout) -> None:
    """Add DLQ depth and change, and dead letters and retries by job type."""
    lay.row("Dead letters")
    depth = f"max by (group) (taskq_queue_messages{{{G}, {DLQ}}}"
    lay.add(
        timeseries(
            "DLQ depth per group",
            "Dead letters waiting per group.",
            per_group(depth + ")"),
            links=TO_GROUP,
        ),
        timeseries(
            "DLQ change over the last hour",
            "Above zero: new dead letters. Below zero: replayed, purged or expired.",
            per_group(f"{depth}) - {depth} offset 1h)"),
            minimum=None,  # no floor at zero: a replay or purge makes the change negative
        ),
    )
    for outcome, title, description in (
        ("dead", "Dead-lettered by job type", "Runs that went to the DLQ, per job type."),
        (
            "retried",
            "Retries by job type",
            "Runs that failed and were scheduled for another attempt.",
        ),
    ):
        expr = f'sum by (group, type) (rate(taskq_jobs_completed_total{{{GT}, outcome="{outcome}"}}{RATE}))'
        lay.add(timeseries(title, description, [(expr, "{{group}} {{type}}")], unit="ops"))


def dlq_replay(lay: Layout) -> None:
    """Add the delay tiers and what to watch during a replay."""
    lay.row("Delay tiers and replay")
    replay = [
        (f"sum by (group) (rate(taskq_jobs_started_total{{{GT}}}{RATE}))", "{{group}} started"),
        (
            f'sum by (group) (rate(taskq_jobs_completed_total{{{GT}, outcome="dead"}}{RATE}))',
            "{{group}} dead again",
        ),
    ]
    console = f'sum by (route, status) (increase(taskq_api_requests_total{{route=~"/admin/dlq.*"}}{RATE}))'
    lay.add(
        timeseries(
            "Messages waiting in delay tiers",
            "Retries and delayed jobs per delay tier (all groups share the tiers).",
            [("sum by (tier) (taskq_retry_tier_messages)", "{{tier}}")],
            stack=True,
        ),
        timeseries(
            "Replay progress: runs started vs dead again",
            "During a replay starts rise and the DLQ falls; dead-again rising means the cause is not fixed.",
            replay,
            unit="ops",
        ),
    )
    lay.add(
        timeseries(
            "DLQ operations through the HTTP API",
            "List, replay and purge calls on /admin/dlq (taskctl dlq talks to the broker directly and is not counted).",
            [(console, "{{route}} {{status}}")],
        ),
        width=24,
    )


def dead_letters() -> Json:
    """Return the DLQ, retry tiers and replay view."""
    types = label_variable(
        "type", "Job type", f"label_values(taskq_jobs_completed_total{{{G}}}, type)"
    )
    return dashboard(
        "taskq-dlq",
        "taskq dead letters, retries and replay",
        "Where failed jobs are and whether a replay works.",
        [GROUPS, types],
        (dlq_now, dlq_dead_letters, dlq_replay),
    )

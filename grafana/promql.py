"""PromQL selectors, thresholds and links shared by the dashboards."""

from __future__ import annotations

from panels import OLDEST_JOB_SLO_SECONDS, Query, label_variable, thresholds

# Grafana variables: "All" is the regex .*, so every query filters with =~.
G = 'group=~"$group"'
GT = 'group=~"$group", type=~"$type"'
BACKLOG = 'kind=~"ready|unacked"'
DLQ = 'kind="dlq"'
RATE = "[$__rate_interval]"
FAILED = 'outcome=~"retried|dead"'

SLO = thresholds(
    (None, "green"), (OLDEST_JOB_SLO_SECONDS / 2, "orange"), (OLDEST_JOB_SLO_SECONDS, "red")
)
ANY_IS_BAD = thresholds((None, "green"), (1, "red"))
ANY_IS_WORTH_A_LOOK = thresholds((None, "green"), (1, "orange"))
ERROR_RATIO = thresholds((None, "green"), (0.05, "orange"), (0.1, "red"))
BREAKER = thresholds((None, "green"), (1, "orange"), (2, "red"))
BREAKER_NAMES = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "index": 0},
            "1": {"text": "half-open", "index": 1},
            "2": {"text": "open", "index": 2},
        },
    }
]
# A click on a per-group series opens that group's drill-down, same time range.
TO_GROUP = [
    {
        "title": "Open group ${__field.labels.group}",
        "url": "/d/taskq-group/taskq-group-drill-down?var-datasource=${datasource}"
        "&var-group=${__field.labels.group}&${__url_time_range}",
    }
]
GROUPS = label_variable("group", "Group", "label_values(taskq_queue_messages, group)")


def failed_ratio(selector: str, by: str = "", window: str = RATE) -> str:
    """Return the share of finished runs that failed (retried or dead), by ``by``."""
    total = f"sum by ({by}) " if by else "sum"
    return (
        f"{total}(rate(taskq_jobs_completed_total{{{selector}, {FAILED}}}{window}))\n"
        f"/\n{total}(rate(taskq_jobs_completed_total{{{selector}}}{window}))"
    )


def per_group(expr: str) -> list[Query]:
    """Return one query whose series are named after their group."""
    return [(expr, "{{group}}")]

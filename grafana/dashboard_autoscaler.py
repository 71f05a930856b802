"""The autoscaler: what it sees, what it wants, what it did."""

from __future__ import annotations

from panels import Json, Layout, dashboard, label_variable, stat, timeseries
from promql import ANY_IS_BAD, ANY_IS_WORTH_A_LOOK, RATE, TO_GROUP, G, per_group


def autoscaler_now(lay: Layout) -> None:
    """Add the autoscaler's single numbers."""
    lay.row("Right now")
    lay.add(
        stat(
            "Workers running",
            "Workers the autoscaler runs over the selected groups.",
            f"sum(taskq_autoscaler_current_workers{{{G}}})",
        ),
        stat(
            "Groups holding",
            "Groups whose signals could not be read: the last decision is held.",
            f"count(max by (group) (taskq_autoscaler_holding{{{G}}}) == 1) or vector(0)",
            limits=ANY_IS_BAD,
        ),
        stat(
            "Scale actions in the last hour",
            "Scale ups and downs over the last hour.",
            f"sum(increase(taskq_autoscaler_decisions_total{{{G}}}[1h]))",
        ),
        stat(
            "Management API errors in the last 15 minutes",
            "Failed reads of the RabbitMQ management API.",
            f"sum(increase(taskq_autoscaler_management_api_errors_total{{{G}}}[15m]))",
            limits=ANY_IS_WORTH_A_LOOK,
        ),
        width=6,
        height=4,
    )


def autoscaler_decisions(lay: Layout) -> None:
    """Add workers against what is wanted, the signals, and the actions."""
    lay.row("Decisions")
    workers = [
        (f"max by (group) (taskq_autoscaler_current_workers{{{G}}})", "{{group}} current"),
        (f"max by (group) (taskq_autoscaler_desired_workers{{{G}}})", "{{group}} desired"),
    ]
    actions = f"sum by (group, direction) (increase(taskq_autoscaler_decisions_total{{{G}}}{RATE}))"
    consumers = [
        (f"max by (group) (taskq_queue_consumers{{{G}}})", "{{group}} consumers"),
        (f"max by (group) (taskq_autoscaler_current_workers{{{G}}})", "{{group}} workers"),
    ]
    lay.add(
        timeseries(
            "Workers: current vs desired",
            "Desired above current for long means workers fail to start (or max is reached).",
            workers,
            links=TO_GROUP,
        ),
        timeseries(
            "Backlog seen by the autoscaler",
            "Ready plus unacked messages, as read from the management API.",
            per_group(f"max by (group) (taskq_autoscaler_backlog_messages{{{G}}})"),
        ),
        timeseries(
            "Backlog per worker",
            "Compare with the group's scale.backlog_per_worker: above it, the group is at max or scaling.",
            per_group(
                f"max by (group) (taskq_autoscaler_backlog_messages{{{G}}})\n/\nclamp_min(max by (group) (taskq_autoscaler_current_workers{{{G}}}), 1)"
            ),
        ),
        timeseries(
            "Drain rate (acks per second)",
            "Messages acked per second, as the broker measures it.",
            per_group(f"max by (group) (taskq_autoscaler_ack_rate{{{G}}})"),
            unit="ops",
        ),
        timeseries(
            "Scale actions",
            "Each scale up or down; a saw-tooth means the policy oscillates.",
            [(actions, "{{group}} {{direction}}")],
        ),
        timeseries(
            "Broker consumers vs workers",
            "Each worker should consume: fewer consumers than workers means workers are starting or stuck.",
            consumers,
        ),
    )


def autoscaler_management_api(lay: Layout) -> None:
    """Add the management API's failures and the groups holding because of them."""
    lay.row("Management API")
    lay.add(
        timeseries(
            "Management API errors",
            "Failed reads per second; while they last the autoscaler holds its decisions.",
            per_group(
                f"sum by (group) (rate(taskq_autoscaler_management_api_errors_total{{{G}}}{RATE}))"
            ),
            unit="ops",
        ),
        timeseries(
            "Holding the last decision",
            "1 while a group's signals could not be read.",
            per_group(f"max by (group) (taskq_autoscaler_holding{{{G}}})"),
            limits=ANY_IS_BAD,
        ),
    )


def autoscaler() -> Json:
    """Return the autoscaler view: what it sees, what it wants, what it did."""
    groups = label_variable(
        "group", "Group", "label_values(taskq_autoscaler_desired_workers, group)"
    )
    return dashboard(
        "taskq-autoscaler",
        "taskq autoscaler",
        "What the autoscaler sees, wants and did, per group.",
        [groups],
        (autoscaler_now, autoscaler_decisions, autoscaler_management_api),
    )

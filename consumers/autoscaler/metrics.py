"""The autoscaler's Prometheus metrics: per group, what runs, what is wanted, and why it moved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry.metrics import MetricSet, counter, gauge

if TYPE_CHECKING:
    from consumers.autoscaler.loop import GroupStatus


class AutoscalerMetrics(MetricSet):
    """Gauges and counters of one autoscaler (served by its status server)."""

    # Label values are topology group names (and delay tier names): bounded sets.
    current = gauge("taskq_autoscaler_current_workers", "Workers a group runs now.", "group")
    desired = gauge(
        "taskq_autoscaler_desired_workers", "Workers the policy wants for a group.", "group"
    )
    backlog = gauge(
        "taskq_autoscaler_backlog_messages",
        "Ready plus unacknowledged messages in a group's work queues.",
        "group",
    )
    ack_rate = gauge(
        "taskq_autoscaler_ack_rate", "Messages acked per second in a group's work queues.", "group"
    )
    decisions = counter(
        "taskq_autoscaler_decisions_total", "Scale actions taken, by direction.", "group direction"
    )
    management_errors = counter(
        "taskq_autoscaler_management_api_errors_total",
        "Failed reads of a group's signals from the RabbitMQ management API.",
        "group",
    )
    held = gauge(
        "taskq_autoscaler_holding",
        "1 while a group's last decision is held because its signals could not be read.",
        "group",
    )
    # What on-call watches besides the scaling: the queues around the work queues.
    queue_messages = gauge(
        "taskq_queue_messages",
        "Messages in a group's queues: ready and unacked work, and its dead-letter queue.",
        "group kind",
    )
    queue_consumers = gauge("taskq_queue_consumers", "Consumers on a group's work queue.", "group")
    oldest_age = gauge(
        "taskq_queue_oldest_message_age_seconds",
        "Age of the oldest ready message of a group, where the broker exposes it.",
        "group",
    )
    tier_messages = gauge(
        "taskq_retry_tier_messages",
        "Messages waiting in a delay tier (retries and delayed jobs).",
        "tier",
    )

    def observe(self, status: GroupStatus) -> None:
        """Set the gauges from one group's latest status."""
        group = status.group
        self.current.labels(group).set(status.current)
        self.desired.labels(group).set(status.desired)
        self.held.labels(group).set(1 if status.error else 0)
        if status.backlog is not None:
            self.backlog.labels(group).set(status.backlog)
        if status.ack_rate is not None:
            self.ack_rate.labels(group).set(status.ack_rate)
        if status.ready is not None and status.unacked is not None:
            self.queue_messages.labels(group, "ready").set(status.ready)
            self.queue_messages.labels(group, "unacked").set(status.unacked)
        if status.consumers is not None:
            self.queue_consumers.labels(group).set(status.consumers)
        if status.oldest_age is not None:
            self.oldest_age.labels(group).set(status.oldest_age)
        elif status.ready is not None:  # read fine and nothing waiting: no old job to alert on
            self.oldest_age.labels(group).set(0)

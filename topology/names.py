"""The names taskq gives to broker objects, and the rules a name must follow."""

from __future__ import annotations

import re

# Stricter than RabbitMQ (255 bytes, no amq. prefix), so names stay readable in the
# management UI, in metrics labels and in Kubernetes object names.
NAMESPACE_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
GROUP_RE = re.compile(r"[a-z][a-z0-9_-]{0,47}")
SOURCE_RE = re.compile(r"[a-z][a-z0-9_-]{0,47}")  # a webhook source: one segment of its URL
DEFAULT_TENANT = "default"  # the tenant of jobs whose submitter names none
HEADER_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP field name (RFC 9110 token)
RESERVED_GROUPS = frozenset({"jobs", "retry", "dlx", "events", "delay"})
CALLBACK_JOB_TYPE = "taskq.callback"  # a job's signed callback, delivered as a job of its own
CALLBACKS_GROUP = "callbacks"  # the built-in group that delivers them, unless a group takes them

PRIORITY_HEADER = "taskq-priority"
DELAY_HEADER = "taskq-delay"
ATTEMPT_HEADER = "taskq-attempt"


def jobs_exchange(namespace: str) -> str:
    """Return the topic exchange every job is published to (routing key = job type)."""
    return f"{namespace}.jobs"


def retry_exchange(namespace: str) -> str:
    """Return the headers exchange that routes a delayed message to its delay tier."""
    return f"{namespace}.retry"


def dead_letter_exchange(namespace: str) -> str:
    """Return the direct exchange that routes dead letters to their group's DLQ."""
    return f"{namespace}.dlx"


def events_exchange(namespace: str) -> str:
    """Return the topic exchange that carries job status events."""
    return f"{namespace}.events"


def work_queue(namespace: str, group: str) -> str:
    """Return the name of a group's work queue."""
    return f"{namespace}.{group}"


def lane_queue(namespace: str, group: str, lane: str) -> str:
    """Return the name of one priority lane's queue of a group."""
    return f"{namespace}.{group}.{lane}"


def lanes_exchange(namespace: str, group: str) -> str:
    """Return the headers exchange that splits a lane group's jobs by priority."""
    return f"{namespace}.{group}.lanes"


def dead_letter_queue(namespace: str, group: str) -> str:
    """Return the name of a group's dead-letter queue."""
    return f"{namespace}.{group}.dlq"


def delay_label(tier_ms: int) -> str:
    """Return the tier label carried in the delay header (``4s``, ``500ms``)."""
    return f"{tier_ms // 1000}s" if tier_ms % 1000 == 0 else f"{tier_ms}ms"


def delay_queue(namespace: str, tier_ms: int) -> str:
    """Return the name of the delay-tier queue that holds messages for ``tier_ms``."""
    return f"{namespace}.delay.{delay_label(tier_ms)}"


def worker_deployment(group: str) -> str:
    """Return the name of the Kubernetes Deployment that runs a group's workers."""
    return f"taskq-worker-{group}"

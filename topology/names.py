"""The names taskq gives to broker objects, the rules a name must follow, and the four job priorities with their AMQP levels."""

from __future__ import annotations

import re
from enum import StrEnum

# Stricter than RabbitMQ (255 bytes, no amq. prefix), so names stay readable in the
# management UI, in metrics labels and in Kubernetes object names.
NAMESPACE_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# A group, a source or a schedule: a segment of a queue name, a URL, a process name or a label.
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,47}")
DEFAULT_TENANT = "default"  # the tenant of jobs whose submitter names none
HEADER_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP field name (RFC 9110 token)
# A group queue is <namespace>.<group>: these would collide with taskq's own objects.
RESERVED_GROUPS = frozenset({"jobs", "retry", "dlx", "events", "delay", "scheduler"})
CALLBACK_JOB_TYPE = "taskq.callback"  # a job's signed callback, delivered as a job of its own
CALLBACKS_GROUP = "callbacks"  # the built-in group that delivers them, unless a group takes them
SCHEDULE_SOURCE = "schedule"  # the source whose idempotency keys name schedule occurrences

PRIORITY_HEADER = "taskq-priority"
DELAY_HEADER = "taskq-delay"
ATTEMPT_HEADER = "taskq-attempt"


class Priority(StrEnum):
    """The four job priorities, lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def level(self) -> int:
        """Return the AMQP priority (0 = low … 3 = urgent)."""
        return _PRIORITY_LEVELS[self]


_PRIORITY_LEVELS = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.URGENT: 3}
MAX_PRIORITY = 3


def worker_deployment(group: str) -> str:
    """Return the name of the Kubernetes Deployment that runs a group's workers."""
    return f"taskq-worker-{group}"


def stream_deployment(source: str) -> str:
    """Return the name of the Kubernetes Deployment that runs a stream source's readers."""
    return f"taskq-stream-{source}"

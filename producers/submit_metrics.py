"""Submission outcomes as a Prometheus counter: by source, group, priority and what became of it."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

from topology.errors import (
    BlobUnavailableError,
    BrokerUnavailableError,
    ContractError,
    IdempotencyInFlightError,
    JobRejectedError,
    PublishError,
    StoreUnavailableError,
    TaskqError,
)

SUBMISSIONS = Counter(
    "taskq_job_submissions_total",
    "Job submissions by source (api, client, webhook:<name>), group, priority and outcome.",
    ["source", "group", "priority", "outcome"],
    registry=REGISTRY,
)
UNKNOWN_GROUP = "unknown"  # a job type no group takes: the type itself is client input


def outcome_of(error: TaskqError | None, *, replayed: bool = False) -> str:
    """Return the bounded outcome label of a submission."""
    if error is None:
        return "replayed" if replayed else "accepted"
    if isinstance(error, JobRejectedError | ContractError):
        return "rejected"
    if isinstance(error, IdempotencyInFlightError):
        return "conflict"
    if isinstance(
        error, BrokerUnavailableError | PublishError | StoreUnavailableError | BlobUnavailableError
    ):
        return "unavailable"
    return "error"

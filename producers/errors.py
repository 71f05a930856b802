"""Producer-side failures, split by what the caller does next (see ``topology.errors`` for the root)."""

from __future__ import annotations

from topology.errors import BrokerError, TaskqError


class PublishError(BrokerError):
    """A publish was not confirmed by the broker; the subclass says why."""


class UnroutableError(PublishError):
    """No queue is bound for the routing key: a topology or input error, retrying will not help."""


class PublishNackedError(PublishError):
    """The broker refused the message (nack); retry later."""


class ConfirmTimeoutError(PublishError):
    """No confirm arrived in time: the outcome is unknown, so retry with the same job id."""


class StoreError(TaskqError):
    """The job store failed."""


class StoreUnavailableError(StoreError):
    """The job store cannot be reached right now; retry later (HTTP 503)."""


class BlobStoreError(TaskqError):
    """Storing or fetching a claim-checked payload failed."""


class BlobUnavailableError(BlobStoreError):
    """The blob store cannot be reached right now; retry later (HTTP 503)."""


class BlobIntegrityError(BlobStoreError):
    """A fetched payload does not match the size or checksum its reference promised."""


class JobRejectedError(TaskqError):
    """The job request is invalid; the message says which field and why (HTTP 422)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class UnknownJobTypeError(JobRejectedError):
    """No consumer group takes this job type; the message lists the accepted types."""


class IdempotencyMismatchError(JobRejectedError):
    """The idempotency key was already used with a different request body (HTTP 422)."""


class IdempotencyInFlightError(TaskqError):
    """A request with the same idempotency key is still being processed (HTTP 409)."""


class JobNotFoundError(TaskqError):
    """No job has this id (HTTP 404)."""


class JobStateError(TaskqError):
    """The job is in a state that does not allow the operation (HTTP 409)."""

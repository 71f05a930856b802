"""The taskq exception tree, split by what the caller does next."""

from __future__ import annotations

from typing import Any


class TaskqError(Exception):
    """Root of every exception taskq raises on purpose; keyword arguments become attributes."""

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.__dict__.update(details)


class SettingsError(TaskqError):
    """An environment setting is missing or invalid; the message names the variable."""

    problems: tuple[str, ...] = ()  # one line per bad variable, when read from the environment


class TopologyError(TaskqError):
    """The topology cannot be used as declared."""


class TopologyFileError(TopologyError):
    """The topology file is invalid; the message names the file, the key and the fix."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid topology file {path}:\n{lines}")


class UnknownGroupError(TopologyError):
    """No consumer group of the topology has the name asked for; the message lists the groups."""


class TopologyConflictError(TopologyError):
    """The broker already holds a declaration that RabbitMQ would refuse to change."""


class BrokerUnsupportedError(TopologyError):
    """The broker cannot hold the topology as declared: its version or a feature flag says no."""


class ContractError(TaskqError):
    """A message body or its properties do not form a valid taskq envelope."""


class BrokerError(TaskqError):
    """An operation against RabbitMQ failed."""


class BrokerUnavailableError(BrokerError):
    """RabbitMQ cannot be reached right now; retrying later may succeed."""


class ManagementApiError(BrokerError):
    """The RabbitMQ management API failed, timed out or answered something unusable."""

    status: int | None = None


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


class StreamUnavailableError(TaskqError):
    """The Redis server of a stream source cannot be reached or refused a command; the source tries again."""


class BlobStoreError(TaskqError):
    """Storing or fetching a claim-checked payload failed."""


class BlobUnavailableError(BlobStoreError):
    """The blob store cannot be reached right now; retry later (HTTP 503)."""


class BlobIntegrityError(BlobStoreError):
    """A fetched payload does not match the size or checksum its reference promised."""


class JobRejectedError(TaskqError):
    """The job request is invalid; the message says which field and why (HTTP 422)."""

    field: str | None = None


class UnknownJobTypeError(JobRejectedError):
    """No consumer group takes this job type; the message lists the accepted types."""


class ReservedJobTypeError(JobRejectedError):
    """The job type is reserved for taskq itself or a verified webhook source (HTTP 403)."""


class IdempotencyMismatchError(JobRejectedError):
    """The idempotency key was already used with a different request body (HTTP 422)."""


class IdempotencyInFlightError(TaskqError):
    """A request with the same idempotency key is still being processed (HTTP 409)."""


class JobNotFoundError(TaskqError):
    """No job has this id (HTTP 404)."""


class RequestTooLargeError(TaskqError):
    """A request is over its door's size limit (HTTP 413)."""


class DeadlineExceededError(TaskqError):
    """The caller's deadline passed first; a submission may still be accepted (retry with its key)."""


class JobStateError(TaskqError):
    """The job is in a state that does not allow the operation (HTTP 409)."""


class AccessError(TaskqError):
    """The caller may not do this; the subclass says whether to authenticate, ask or wait."""


class AuthenticationError(AccessError):
    """No valid credential came with the request (HTTP 401); the message says what was wrong."""

    error: str = "invalid_token"  # the RFC 6750 error code: invalid_request or invalid_token


class PermissionDeniedError(AccessError):
    """The credential is valid but lacks the scope or job type the operation needs (HTTP 403)."""

    scope: str | None = None


class RateLimitedError(AccessError):
    """The credential (or webhook source) used up its request rate; retry after ``retry_after`` s."""

    retry_after: float = 0.0


class IdentityProviderUnavailableError(AccessError):
    """The identity provider's signing keys cannot be fetched; retry later (HTTP 503)."""


class WebhookError(TaskqError):
    """A webhook was refused or cannot be handled; the subclass says which answer to give."""


class SignatureRejected(WebhookError):
    """The delivery is not authentically signed (HTTP 401)."""


class TimestampRejected(WebhookError):
    """The delivery is authentic but was signed outside the tolerance window (HTTP 401)."""


class MalformedWebhook(WebhookError):
    """A header or body cannot be parsed, or holds too much to check (HTTP 400)."""


class WebhookConfigError(WebhookError):
    """A secret or verifier option is unusable; raised when a verifier is built, never per request."""


class OutboundError(TaskqError):
    """An outbound HTTP call did not succeed; the subclass says whether to retry."""


class AddressRefused(OutboundError):
    """The URL's scheme, shape or addresses may not be dialled; retrying will not help."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"refused to dial {url}: {reason}")


class DeliveryRejected(OutboundError):
    """The receiver answered a 4xx that means "do not send this again" (not 408, 425 or 429)."""

    status: int = 0


class DeliveryFailed(OutboundError):
    """The call failed in a way that may pass later; ``retry_after`` is the receiver's hint in seconds."""

    status: int | None = None
    retry_after: float | None = None

"""Outbound HTTP failures, split by what the caller does next (see ``topology.errors`` for the root)."""

from __future__ import annotations

from topology.errors import TaskqError


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

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class DeliveryFailed(OutboundError):
    """The call failed in a way that may pass later; ``retry_after`` is the receiver's hint in seconds."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)

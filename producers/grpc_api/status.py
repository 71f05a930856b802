"""The gRPC status code of each taskq error: the same decisions as the HTTP API's problems, in gRPC's words."""

from __future__ import annotations

import grpc

from producers.auth.authenticator import retry_after
from producers.metrics import UNAVAILABLE
from topology.errors import (
    AccessError,
    AuthenticationError,
    ContractError,
    DeadlineExceededError,
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    JobNotFoundError,
    JobRejectedError,
    JobStateError,
    PermissionDeniedError,
    RateLimitedError,
    RequestTooLargeError,
    ReservedJobTypeError,
    TaskqError,
)

Code = grpc.StatusCode

# The first match wins: a reserved type and a reused key are refused before other rejections.
_CODES: tuple[tuple[type[TaskqError] | tuple[type[TaskqError], ...], Code], ...] = (
    (ReservedJobTypeError, Code.PERMISSION_DENIED),
    (IdempotencyMismatchError, Code.ALREADY_EXISTS),
    ((JobRejectedError, ContractError), Code.INVALID_ARGUMENT),
    (IdempotencyInFlightError, Code.ABORTED),
    (JobStateError, Code.FAILED_PRECONDITION),
    (JobNotFoundError, Code.NOT_FOUND),
    (AuthenticationError, Code.UNAUTHENTICATED),
    (PermissionDeniedError, Code.PERMISSION_DENIED),
    ((RateLimitedError, RequestTooLargeError), Code.RESOURCE_EXHAUSTED),
    (DeadlineExceededError, Code.DEADLINE_EXCEEDED),
    ((AccessError, *UNAVAILABLE), Code.UNAVAILABLE),
)


def code_of(error: BaseException) -> Code:
    """Return the status code that tells a gRPC client what to do about ``error``."""
    if not isinstance(error, Exception):
        return Code.CANCELLED  # the client left, or its deadline passed
    return next((code for kinds, code in _CODES if isinstance(error, kinds)), Code.INTERNAL)


def details_of(error: Exception, code: Code) -> str:
    """Return the status message of ``error``: what went wrong, never an internal error's insides."""
    if code is Code.INTERNAL:
        return "internal error"
    detail = str(error)
    if code is Code.UNAVAILABLE and not isinstance(error, AccessError):
        return f"{detail}; retry later"
    return detail


def trailers_of(error: Exception) -> tuple[tuple[str, str], ...]:
    """Return the trailing metadata of a refusal: ``retry-after`` seconds when the rate ran out."""
    if isinstance(error, RateLimitedError):
        return (("retry-after", retry_after(error.retry_after)),)
    return ()

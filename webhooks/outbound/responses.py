"""What an outbound call keeps of a response, and which statuses are worth retrying."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from webhooks.outbound.errors import DeliveryFailed, DeliveryRejected, OutboundError

BODY_LIMIT = 64 * 1024
"""Bytes of a response body read at most; the rest is never pulled off the socket."""

KEPT_HEADERS = ("content-type", "content-length", "date", "location", "retry-after")
"""Response headers worth keeping for a delivery log (lower case)."""

_HEADER_LIMIT = 512
# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "later", not "never".
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Response:
    """A receiver's answer: its status, a few headers and the first ``BODY_LIMIT`` bytes."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the ``KEPT_HEADERS`` present in ``headers``, lower-cased and length-capped."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return {name: lowered[name][:_HEADER_LIMIT] for name in KEPT_HEADERS if name in lowered}


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return a ``Retry-After`` value (seconds or an HTTP date) as seconds from ``now``, or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def outcome_error(response: Response, shown: str) -> OutboundError | None:
    """Return the error a non-2xx ``response`` from ``shown`` stands for, or None for a 2xx."""
    status = response.status
    if 200 <= status < 300:
        return None
    hint = retry_after(response.headers.get("retry-after"))
    if 300 <= status < 400:
        where = response.headers.get("location", "nowhere")
        return DeliveryFailed(
            f"{shown} answered {status} redirecting to {where!r}; redirects are not followed",
            status=status,
            retry_after=hint,
        )
    snippet = response.body[:120]
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return DeliveryRejected(f"{shown} rejected the call: {status} {snippet!r}", status=status)
    return DeliveryFailed(
        f"{shown} answered {status} {snippet!r}; retry later", status=status, retry_after=hint
    )

"""SSRF-safe outbound HTTP: check callback URLs, then POST to a checked, pinned address."""

from webhooks.outbound.addresses import AllowList, may_dial, refusal
from webhooks.outbound.errors import (
    AddressRefused,
    DeliveryFailed,
    DeliveryRejected,
    OutboundError,
)

__all__ = [
    "AddressRefused",
    "AllowList",
    "DeliveryFailed",
    "DeliveryRejected",
    "OutboundError",
    "may_dial",
    "refusal",
]

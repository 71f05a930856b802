"""SSRF-safe outbound HTTP: check callback URLs, then POST to a checked, pinned address."""

from webhooks.outbound.addresses import AllowList, may_dial, refusal
from webhooks.outbound.errors import (
    AddressRefused,
    DeliveryFailed,
    DeliveryRejected,
    OutboundError,
)
from webhooks.outbound.url_check import Target, check_callback_url, parse_callback_url

__all__ = [
    "AddressRefused",
    "AllowList",
    "DeliveryFailed",
    "DeliveryRejected",
    "OutboundError",
    "Target",
    "check_callback_url",
    "may_dial",
    "parse_callback_url",
    "refusal",
]

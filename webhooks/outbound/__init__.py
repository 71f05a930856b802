"""SSRF-safe outbound HTTP: check callback URLs, then POST to a checked, pinned address."""

from webhooks.outbound.addresses import AllowList, may_dial, refusal
from webhooks.outbound.client import open_session, post
from webhooks.outbound.errors import (
    AddressRefused,
    DeliveryFailed,
    DeliveryRejected,
    OutboundError,
)
from webhooks.outbound.responses import BODY_LIMIT, Response
from webhooks.outbound.url_check import Target, check_callback_url, parse_callback_url

__all__ = [
    "BODY_LIMIT",
    "AddressRefused",
    "AllowList",
    "DeliveryFailed",
    "DeliveryRejected",
    "OutboundError",
    "Response",
    "Target",
    "check_callback_url",
    "may_dial",
    "open_session",
    "parse_callback_url",
    "post",
    "refusal",
]

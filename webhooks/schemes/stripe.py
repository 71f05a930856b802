"""Stripe's ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}." + body>`` scheme."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from topology.errors import MalformedWebhook, SignatureRejected
from webhooks.schemes.base import (
    DEFAULT_TOLERANCE,
    Delivery,
    byte_secrets,
    check_signature_count,
    check_window,
    decode_hex,
    foreign_errors,
    hmac_matches,
    json_object,
    positive_tolerance,
    printable_token,
    signature_header,
    unix_seconds,
)

SIGNATURE_HEADER = "stripe-signature"


class StripeVerifier:
    """Verifies Stripe events; a stale timestamp fails, a future one passes as in stripe-python."""

    def __init__(self, secrets: Sequence[bytes], tolerance: int = DEFAULT_TOLERANCE) -> None:
        self._secrets = byte_secrets(secrets)
        self._tolerance = positive_tolerance(tolerance)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        """Return the event's delivery if any v1 signature matches a secret, else raise a WebhookError."""
        with foreign_errors("Stripe"):
            timestamp, given = _parse(signature_header(headers, SIGNATURE_HEADER))
            if not hmac_matches(self._secrets, f"{timestamp}.".encode() + body, given):
                raise SignatureRejected(
                    "no v1 signature in Stripe-Signature matches a configured secret"
                )
            # Checked after the signature, as stripe-python does: this error means authentic
            # but stale, never a forgery.
            check_window(timestamp, now, self._tolerance, future_ok=True)
            event_id, event_type = _event(body)
            return Delivery(event_id, event_type, timestamp)


def sign_stripe(secret: bytes, timestamp: int, body: bytes) -> str:
    """Return the whole ``Stripe-Signature`` value Stripe would send for ``body`` at ``timestamp``."""
    digest = hmac.digest(secret, f"{timestamp}.".encode() + body, "sha256")
    return f"t={timestamp},v1={digest.hex()}"


def _parse(value: str) -> tuple[int, list[bytes]]:
    """Return the timestamp and the decoded v1 signatures; v0 and unknown schemes are skipped."""
    items = value.split(",")
    check_signature_count(len(items) - 1, "Stripe-Signature")  # every entry but the one t=
    entries = [item.partition("=") for item in items]
    if any(not sep for _, sep, _ in entries):
        raise MalformedWebhook("every Stripe-Signature entry must be name=value")
    timestamps = [text for name, _, text in entries if name == "t"]
    if len(timestamps) != 1:
        raise MalformedWebhook("Stripe-Signature must hold exactly one t= timestamp")
    timestamp = unix_seconds(timestamps[0], "the Stripe-Signature t= value")
    given = [
        decode_hex(text, "a Stripe-Signature v1 value") for name, _, text in entries if name == "v1"
    ]
    if not given:
        raise SignatureRejected(
            "Stripe-Signature holds no v1 signature (only v0 or unknown schemes)"
        )
    return timestamp, given


def _event(body: bytes) -> tuple[str, str]:
    """Return the id and type of the verified event body."""
    event = json_object(body)
    if event is None:
        raise MalformedWebhook("the Stripe event body is not JSON, or not a JSON object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise MalformedWebhook("the Stripe event body needs string 'id' and 'type' fields")
    event_id = printable_token(event_id, "the Stripe event id")
    return event_id, printable_token(event_type, "the Stripe event type")

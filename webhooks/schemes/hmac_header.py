"""One-header HMAC schemes: a configurable one, GitHub's ``X-Hub-Signature-256: sha256=<hex>`` and Stripe's ``Stripe-Signature``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal

from topology.errors import MalformedWebhook, SignatureRejected, WebhookConfigError
from webhooks.schemes import base

Algorithm = Literal["sha1", "sha256", "sha512"]
Encoding = Literal["hex", "base64"]


class HmacVerifier(base.Verifier):
    """Verifies ``<prefix><hex or base64 HMAC>`` in one header, over the body or ``"{ts}." + body``."""

    def __init__(
        self,
        secrets: Sequence[bytes],
        *,
        header: str,
        algorithm: Algorithm = "sha256",
        encoding: Encoding = "hex",
        prefix: str = "",
        timestamp_header: str | None = None,
        tolerance: int = base.DEFAULT_TOLERANCE,
        id_header: str | None = None,
        event_header: str | None = None,
        kept: Sequence[str] = (),
    ) -> None:
        super().__init__(secrets, tolerance)
        self._algorithm, self._encoding = algorithm, encoding
        if not prefix.isascii():
            raise WebhookConfigError("the signature prefix must be ASCII, as header values are")
        self._prefix = prefix
        # The receiver hands over lower-cased header names.
        self._header = header.lower()
        self.name = f"{self._header} HMAC"
        self._timestamp_header, self._id_header, self._event_header = (
            name.lower() if name else None for name in (timestamp_header, id_header, event_header)
        )
        own = (self._header, self._timestamp_header, self._id_header, self._event_header)
        self.kept = (*(name for name in own if name), *kept)

    def _verify(self, body: bytes, headers: Mapping[str, str], now: float) -> base.Delivery:
        value = base.header(headers, self._header, signature=True)
        if not value.startswith(self._prefix):
            raise MalformedWebhook(
                f"the {self._header} header does not start with {self._prefix!r}"
            )
        signature = value[len(self._prefix) :]
        given = base.decode_signature(signature, self._encoding, f"the {self._header} header")
        timestamp = None
        if self._timestamp_header is not None:
            value = base.header(headers, self._timestamp_header)
            timestamp = base.unix_seconds(value, f"the {self._timestamp_header} header")
        # No id from the sender: the body's hash makes an identical redelivery dedup.
        delivery_id = _token(headers, self._id_header) or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
        event = _token(headers, self._event_header)
        content = signed_content(body, timestamp)
        if not base.hmac_matches(self._secrets, content, [given], self._algorithm):
            raise SignatureRejected(f"the {self._header} signature matches no configured secret")
        if timestamp is not None:
            base.check_window(timestamp, now, self._tolerance, future_ok=False)
        return base.Delivery(delivery_id, event, timestamp)


def _token(headers: Mapping[str, str], name: str | None) -> str | None:
    if name is None:
        return None
    return base.printable_token(base.header(headers, name), f"the {name} header")


def signed_content(body: bytes, timestamp: int | None) -> bytes:
    """Return what the HMAC covers: the body, after ``"{timestamp}."`` when there is one."""
    return body if timestamp is None else f"{timestamp}.".encode() + body


def github_verifier(secrets: Sequence[bytes]) -> HmacVerifier:
    """Return the verifier of GitHub deliveries: the HMAC scheme with GitHub's headers."""
    # No timestamp: replays are stopped only by deduplicating X-GitHub-Delivery.
    return HmacVerifier(
        secrets,
        header="x-hub-signature-256",
        prefix="sha256=",
        id_header="x-github-delivery",
        event_header="x-github-event",
        kept=("x-github-hook-id",),
    )


STRIPE_SIGNATURE_HEADER = "stripe-signature"


class StripeVerifier(base.Verifier):
    """Verifies Stripe events; a stale timestamp fails, a future one passes as in stripe-python."""

    name = "Stripe"
    kept = (STRIPE_SIGNATURE_HEADER,)

    def _verify(self, body: bytes, headers: Mapping[str, str], now: float) -> base.Delivery:
        timestamp, given = _parse_stripe(
            base.header(headers, STRIPE_SIGNATURE_HEADER, signature=True)
        )
        if not base.hmac_matches(self._secrets, signed_content(body, timestamp), given):
            raise SignatureRejected(
                "no v1 signature in Stripe-Signature matches a configured secret"
            )
        # Checked after the signature, as stripe-python does: this error means authentic but
        # stale, never a forgery.
        base.check_window(timestamp, now, self._tolerance, future_ok=True)
        event = base.json_object(body)
        if event is None:
            raise MalformedWebhook("the Stripe event body is not JSON, or not a JSON object")
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise MalformedWebhook("the Stripe event body needs string 'id' and 'type' fields")
        event_id = base.printable_token(event_id, "the Stripe event id")
        event_type = base.printable_token(event_type, "the Stripe event type")
        return base.Delivery(event_id, event_type, timestamp)


def _parse_stripe(value: str) -> tuple[int, list[bytes]]:
    """Return the timestamp and the decoded v1 signatures; v0 and unknown schemes are skipped."""
    items = value.split(",")
    base.check_signature_count(len(items) - 1, "Stripe-Signature")  # every entry but the one t=
    entries = [item.partition("=") for item in items]
    if any(not sep for _, sep, _ in entries):
        raise MalformedWebhook("every Stripe-Signature entry must be name=value")
    timestamps = [text for name, _, text in entries if name == "t"]
    if len(timestamps) != 1:
        raise MalformedWebhook("Stripe-Signature must hold exactly one t= timestamp")
    timestamp = base.unix_seconds(timestamps[0], "the Stripe-Signature t= value")
    given = [
        base.decode_signature(text, "hex", "a Stripe-Signature v1 value")
        for name, _, text in entries
        if name == "v1"
    ]
    if not given:
        raise SignatureRejected(
            "Stripe-Signature holds no v1 signature (only v0 or unknown schemes)"
        )
    return timestamp, given

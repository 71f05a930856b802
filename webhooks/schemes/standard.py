"""Standard Webhooks v1.0.0: ``webhook-id``, ``webhook-timestamp`` and a list of v1/v1a signatures."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from webhooks.errors import MalformedWebhook, SignatureRejected
from webhooks.schemes.base import (
    DEFAULT_TOLERANCE,
    Delivery,
    check_signature_count,
    check_window,
    decode_base64,
    foreign_errors,
    positive_tolerance,
    printable_token,
    required_header,
    signature_header,
    unix_seconds,
)
from webhooks.schemes.standard_keys import hmac_secret, parse_keys, private_key

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class StandardVerifier:
    """Verifies Standard Webhooks deliveries against every trusted key; ±tolerance around now."""

    def __init__(self, secrets: Sequence[str], tolerance: int = DEFAULT_TOLERANCE) -> None:
        keys = parse_keys(secrets)
        self._hmac_secrets = keys.hmac_secrets
        self._public_keys = keys.public_keys
        self._tolerance = positive_tolerance(tolerance)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        """Return the delivery if any signature matches a key of its kind, else raise a WebhookError."""
        with foreign_errors("Standard Webhooks"):
            msg_id = _message_id(required_header(headers, ID_HEADER))
            timestamp = unix_seconds(
                required_header(headers, TIMESTAMP_HEADER), "webhook-timestamp"
            )
            hmac_signatures, ed25519_signatures = _parse(
                signature_header(headers, SIGNATURE_HEADER)
            )
            content = f"{msg_id}.{timestamp}.".encode() + body
            self._check(content, hmac_signatures, ed25519_signatures)
            # Checked after the signature so this error means authentic but stale (or skewed).
            check_window(timestamp, now, self._tolerance, future_ok=False)
            return Delivery(msg_id, _event_type(body), timestamp)

    def _check(
        self, content: bytes, hmac_signatures: list[bytes], ed25519_signatures: list[bytes]
    ) -> None:
        checkable_hmac = hmac_signatures if self._hmac_secrets else []
        checkable_ed25519 = ed25519_signatures if self._public_keys else []
        if not checkable_hmac and not checkable_ed25519:
            raise SignatureRejected(
                "webhook-signature holds no signature of a version this receiver has keys for"
            )
        expected = [hmac.digest(secret, content, "sha256") for secret in self._hmac_secrets]
        if any(hmac.compare_digest(e, g) for e in expected for g in checkable_hmac):
            return
        if any(
            _ed25519_valid(key, signature, content)
            for key in self._public_keys
            for signature in checkable_ed25519
        ):
            return
        raise SignatureRejected("no signature in webhook-signature matches a configured key")


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature a sender holding the ``whsec_`` secret would send."""
    digest = hmac.digest(hmac_secret(secret), _content(msg_id, timestamp, body), "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_standard_ed25519(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1a,<base64>`` signature a sender holding the ``whsk_`` private key would send."""
    signature = private_key(secret).sign(_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode("ascii")


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _message_id(value: str) -> str:
    # A dot in the id would let "{id}.{ts}" be split two ways; the spec forbids it.
    if "." in value:
        raise MalformedWebhook("webhook-id must not contain '.'")
    return printable_token(value, "webhook-id")


def _parse(value: str) -> tuple[list[bytes], list[bytes]]:
    """Return the decoded v1 and v1a signatures; entries of unknown versions are skipped."""
    entries = value.split()
    check_signature_count(len(entries), "webhook-signature")
    hmac_signatures, ed25519_signatures = [], []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma:
            raise MalformedWebhook("every webhook-signature entry must be <version>,<base64>")
        if version == "v1":
            hmac_signatures.append(decode_base64(encoded, "a webhook-signature v1 value"))
        elif version == "v1a":
            ed25519_signatures.append(decode_base64(encoded, "a webhook-signature v1a value"))
    return hmac_signatures, ed25519_signatures


def _ed25519_valid(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
    except InvalidSignature:  # the outcome of the check, not an error: try the next pair
        return False
    return True


def _event_type(body: bytes) -> str | None:
    """Return the body's string "type", or None: the signature authenticates, not the body's shape."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    event_type = event.get("type") if isinstance(event, dict) else None
    return event_type if isinstance(event_type, str) else None

"""Standard Webhooks v1.0.0: ``webhook-id``, ``webhook-timestamp`` and a list of v1/v1a signatures."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from topology.errors import MalformedWebhook, SignatureRejected, WebhookConfigError
from webhooks.schemes import base

HMAC_PREFIX = "whsec_"
PUBLIC_PREFIX = "whpk_"
PRIVATE_PREFIX = "whsk_"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class StandardVerifier(base.Verifier):
    """Verifies Standard Webhooks deliveries against every trusted key; ±tolerance around now."""

    name = "Standard Webhooks"
    kept = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

    def __init__(self, secrets: Sequence[str], tolerance: int = base.DEFAULT_TOLERANCE) -> None:
        # The HMAC secrets and ed25519 public keys held in ``whsec_`` and ``whpk_`` strings.
        hmac_secrets, self._public_keys = [], []
        for secret in secrets:
            if secret.startswith(HMAC_PREFIX):
                hmac_secrets.append(_key_bytes(secret, HMAC_PREFIX))
            elif secret.startswith(PUBLIC_PREFIX):
                raw = _key_bytes(secret, PUBLIC_PREFIX)
                if len(raw) != 32:
                    raise WebhookConfigError("a whpk_ key must hold 32 bytes")
                self._public_keys.append(Ed25519PublicKey.from_public_bytes(raw))
            elif secret.startswith(PRIVATE_PREFIX):
                raise WebhookConfigError(
                    "a whsk_ private key belongs to the sender; give the receiver its whpk_ public key"
                )
            else:
                raise WebhookConfigError(
                    "a Standard Webhooks secret must start with whsec_ or whpk_"
                )
        super().__init__(hmac_secrets, tolerance)

    def _verify(self, body: bytes, headers: Mapping[str, str], now: float) -> base.Delivery:
        msg_id = base.header(headers, ID_HEADER)
        if "." in msg_id:  # "{id}.{ts}" could be split two ways; the spec forbids it
            raise MalformedWebhook("webhook-id must not contain '.'")
        msg_id = base.printable_token(msg_id, "webhook-id")
        timestamp = base.unix_seconds(base.header(headers, TIMESTAMP_HEADER), "webhook-timestamp")
        hmac_signatures, ed25519_signatures = _parse(
            base.header(headers, SIGNATURE_HEADER, signature=True)
        )
        self._check(_content(msg_id, timestamp, body), hmac_signatures, ed25519_signatures)
        # Checked after the signature so this error means authentic but stale (or skewed).
        base.check_window(timestamp, now, self._tolerance, future_ok=False)
        # The signature authenticates the body, not its shape: no string "type", no event.
        event = (base.json_object(body) or {}).get("type")
        return base.Delivery(msg_id, event if isinstance(event, str) else None, timestamp)

    def _check(self, content: bytes, hmacs: list[bytes], ed25519s: list[bytes]) -> None:
        hmacs = hmacs if self._secrets else []
        ed25519s = ed25519s if self._public_keys else []
        if not hmacs and not ed25519s:
            raise SignatureRejected(
                "webhook-signature holds no signature of a version this receiver has keys for"
            )
        if not base.hmac_matches(self._secrets, content, hmacs) and not any(
            _ed25519_valid(key, signature, content)
            for key in self._public_keys
            for signature in ed25519s
        ):
            raise SignatureRejected("no signature in webhook-signature matches a configured key")


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature a sender holding the ``whsec_`` secret would send."""
    digest = hmac.digest(
        _key_bytes(secret, HMAC_PREFIX), _content(msg_id, timestamp, body), "sha256"
    )
    return "v1," + base64.b64encode(digest).decode("ascii")


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def _parse(value: str) -> tuple[list[bytes], list[bytes]]:
    """Return the decoded v1 and v1a signatures; entries of unknown versions are skipped."""
    entries = value.split()
    base.check_signature_count(len(entries), "webhook-signature")
    found: dict[str, list[bytes]] = {"v1": [], "v1a": []}
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma:
            raise MalformedWebhook("every webhook-signature entry must be <version>,<base64>")
        if version in ("v1", "v1a"):
            source = f"a webhook-signature {version} value"
            found[version].append(base.decode_signature(encoded, "base64", source))
    return found["v1"], found["v1a"]


def _ed25519_valid(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
    except InvalidSignature:  # the outcome of the check, not an error: try the next pair
        return False
    return True


def _key_bytes(secret: str, prefix: str) -> bytes:
    if not secret.startswith(prefix):
        raise WebhookConfigError(f"expected a key starting {prefix}")
    try:
        raw = base64.b64decode(secret[len(prefix) :], validate=True)
    except binascii.Error as exc:
        raise WebhookConfigError(f"the part after {prefix} is not valid base64") from exc
    if not raw:
        raise WebhookConfigError(f"the {prefix} key is empty")
    return raw

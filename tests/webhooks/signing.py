"""What webhook senders do: sign deliveries for each scheme, and make Standard Webhooks keys."""

import base64
import hmac
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from topology.errors import WebhookConfigError
from webhooks.schemes.hmac_header import Algorithm, signed_content
from webhooks.schemes.hmac_header import Encoding as SignatureEncoding
from webhooks.schemes.standard import HMAC_PREFIX as STANDARD_PREFIX
from webhooks.schemes.standard import PRIVATE_PREFIX, PUBLIC_PREFIX, _content, _key_bytes

SEED_BYTES = 32


def sign_hmac(
    secret: bytes,
    body: bytes,
    *,
    algorithm: Algorithm = "sha256",
    encoding: SignatureEncoding = "hex",
    prefix: str = "",
    timestamp: int | None = None,
) -> str:
    """Return the signature header value HmacVerifier accepts for ``body`` with these options."""
    digest = hmac.digest(secret, signed_content(body, timestamp), algorithm)
    if encoding == "hex":
        return prefix + digest.hex()
    return prefix + base64.b64encode(digest).decode("ascii")


def sign_github(secret: bytes, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return sign_hmac(secret, body, prefix="sha256=")


def sign_stripe(secret: bytes, timestamp: int, body: bytes) -> str:
    """Return the whole ``Stripe-Signature`` value Stripe would send for ``body`` at ``timestamp``."""
    return f"t={timestamp},v1={sign_hmac(secret, body, timestamp=timestamp)}"


def sign_standard_ed25519(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1a,<base64>`` signature a sender holding the ``whsk_`` private key would send."""
    signature = _private_key(secret).sign(_content(msg_id, timestamp, body))
    return "v1a," + _b64(signature)


def _private_key(secret: str) -> Ed25519PrivateKey:
    # A 32-byte seed, or seed + public key (64 bytes).
    raw = _key_bytes(secret, PRIVATE_PREFIX)
    if len(raw) not in (SEED_BYTES, 2 * SEED_BYTES):
        raise WebhookConfigError("a whsk_ key must hold 32 or 64 bytes")
    key = Ed25519PrivateKey.from_private_bytes(raw[:SEED_BYTES])
    # The 64-byte (libsodium) form repeats the public key: a mismatch means a corrupted key.
    public = _raw_public(key)
    if len(raw) > SEED_BYTES and not hmac.compare_digest(public, raw[SEED_BYTES:]):
        raise WebhookConfigError("the whsk_ key's public half does not belong to its seed")
    return key


def generate_standard_secret() -> str:
    """Return a new random ``whsec_`` HMAC secret."""
    return STANDARD_PREFIX + _b64(secrets.token_bytes(32))


def generate_standard_keypair() -> tuple[str, str]:
    """Return a new ed25519 key pair as ``(whsk_ private seed, whpk_ public key)``."""
    seed = secrets.token_bytes(SEED_BYTES)
    public = _raw_public(Ed25519PrivateKey.from_private_bytes(seed))
    return PRIVATE_PREFIX + _b64(seed), PUBLIC_PREFIX + _b64(public)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")

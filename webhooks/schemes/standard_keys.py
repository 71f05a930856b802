"""Standard Webhooks key strings: ``whsec_`` HMAC secrets and ``whpk_``/``whsk_`` ed25519 keys."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets as random
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from webhooks.errors import WebhookConfigError

HMAC_PREFIX = "whsec_"
PUBLIC_PREFIX = "whpk_"
PRIVATE_PREFIX = "whsk_"
# The spec asks for 24 to 64 random bytes; 32 matches SHA-256's block-sized strength.
_NEW_SECRET_BYTES = 32
_SEED_BYTES = 32


@dataclass(frozen=True, slots=True)
class StandardKeys:
    """The keys a Standard Webhooks receiver trusts: HMAC secrets and ed25519 public keys."""

    hmac_secrets: tuple[bytes, ...]
    public_keys: tuple[Ed25519PublicKey, ...]


def parse_keys(secrets: Sequence[str]) -> StandardKeys:
    """Return the trusted keys held in ``whsec_`` and ``whpk_`` strings."""
    if isinstance(secrets, str | bytes):
        raise WebhookConfigError("pass a list of Standard Webhooks secrets, not a single secret")
    hmac_secrets, public_keys = [], []
    for secret in secrets:
        if not isinstance(secret, str):
            raise WebhookConfigError(
                "Standard Webhooks secrets are strings starting whsec_ or whpk_"
            )
        if secret.startswith(HMAC_PREFIX):
            hmac_secrets.append(hmac_secret(secret))
        elif secret.startswith(PUBLIC_PREFIX):
            public_keys.append(_public_key(secret))
        elif secret.startswith(PRIVATE_PREFIX):
            raise WebhookConfigError(
                "a whsk_ private key belongs to the sender; give the receiver its whpk_ public key"
            )
        else:
            raise WebhookConfigError("a Standard Webhooks secret must start with whsec_ or whpk_")
    if not hmac_secrets and not public_keys:
        raise WebhookConfigError("at least one Standard Webhooks secret is needed")
    return StandardKeys(tuple(hmac_secrets), tuple(public_keys))


def hmac_secret(secret: str) -> bytes:
    """Return the HMAC key inside a ``whsec_`` secret."""
    return _key_bytes(secret, HMAC_PREFIX)


def private_key(secret: str) -> Ed25519PrivateKey:
    """Return the signing key in a ``whsk_`` string: a 32-byte seed, or seed + public key (64 bytes)."""
    raw = _key_bytes(secret, PRIVATE_PREFIX)
    if len(raw) not in (_SEED_BYTES, 2 * _SEED_BYTES):
        raise WebhookConfigError("a whsk_ key must hold 32 or 64 bytes")
    key = Ed25519PrivateKey.from_private_bytes(raw[:_SEED_BYTES])
    # The 64-byte (libsodium) form repeats the public key: a mismatch means a corrupted key.
    public = _raw_public(key.public_key())
    if len(raw) > _SEED_BYTES and not hmac.compare_digest(public, raw[_SEED_BYTES:]):
        raise WebhookConfigError("the whsk_ key's public half does not belong to its seed")
    return key


def generate_standard_secret() -> str:
    """Return a new random ``whsec_`` HMAC secret."""
    return HMAC_PREFIX + base64.b64encode(random.token_bytes(_NEW_SECRET_BYTES)).decode("ascii")


def generate_standard_keypair() -> tuple[str, str]:
    """Return a new ed25519 key pair as ``(whsk_ private seed, whpk_ public key)``."""
    seed = random.token_bytes(_SEED_BYTES)
    public = _raw_public(Ed25519PrivateKey.from_private_bytes(seed).public_key())
    return PRIVATE_PREFIX + _b64(seed), PUBLIC_PREFIX + _b64(public)


def _public_key(secret: str) -> Ed25519PublicKey:
    raw = _key_bytes(secret, PUBLIC_PREFIX)
    if len(raw) != _SEED_BYTES:
        raise WebhookConfigError("a whpk_ key must hold 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _key_bytes(secret: str, prefix: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(prefix):
        raise WebhookConfigError(f"expected a key starting {prefix}")
    try:
        raw = base64.b64decode(secret[len(prefix) :], validate=True)
    except binascii.Error as exc:
        raise WebhookConfigError(f"the part after {prefix} is not valid base64") from exc
    if not raw:
        raise WebhookConfigError(f"the {prefix} key is empty")
    return raw


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")

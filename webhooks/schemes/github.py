"""GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` scheme (no timestamp)."""

from __future__ import annotations

from collections.abc import Sequence

from webhooks.schemes.hmac_header import HmacVerifier, sign_hmac

SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADER = "x-github-delivery"
EVENT_HEADER = "x-github-event"
_PREFIX = "sha256="


def github_verifier(secrets: Sequence[bytes]) -> HmacVerifier:
    """Return the verifier of GitHub deliveries: the generic HMAC scheme with GitHub's headers."""
    # No timestamp: replays are stopped only by deduplicating X-GitHub-Delivery.
    return HmacVerifier(
        secrets,
        header=SIGNATURE_HEADER,
        prefix=_PREFIX,
        id_header=DELIVERY_HEADER,
        event_header=EVENT_HEADER,
    )


def sign_github(secret: bytes, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return sign_hmac(secret, body, prefix=_PREFIX)

"""GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` scheme (no timestamp)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from webhooks.schemes.base import Delivery
from webhooks.schemes.hmac_header import HmacVerifier, sign_hmac

SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADER = "x-github-delivery"
EVENT_HEADER = "x-github-event"
_PREFIX = "sha256="


class GithubVerifier:
    """Verifies GitHub deliveries; replays are stopped only by deduplicating ``X-GitHub-Delivery``."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        # GitHub's scheme is the generic one with fixed options, so the crypto lives in one place.
        self._hmac = HmacVerifier(
            secrets,
            header=SIGNATURE_HEADER,
            prefix=_PREFIX,
            id_header=DELIVERY_HEADER,
            event_header=EVENT_HEADER,
        )

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        """Return the delivery if one configured secret signed ``body``, else raise a WebhookError."""
        return self._hmac.verify(body, headers, now)


def sign_github(secret: bytes, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return sign_hmac(secret, body, prefix=_PREFIX)

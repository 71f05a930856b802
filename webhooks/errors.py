"""Webhook failures, split by the answer the receiver gives (see ``topology.errors`` for the root).

::

    WebhookError              root of everything the webhooks package raises on purpose
    ├── SignatureRejected     HTTP 401: no signature, none matches, or only unknown versions
    ├── TimestampRejected     HTTP 401: authentic, but signed outside the tolerance window
    ├── MalformedWebhook      HTTP 400: a header or body that cannot be parsed; the sender must fix it
    ├── UnknownSource         HTTP 404: no webhook source is configured under that name
    └── WebhookConfigError    at start-up: a secret or verifier option is unusable; fix the config

A verifier raises only the first three.  Decoding errors from the standard library and
``cryptography`` are translated where each scheme verifies (``webhooks.schemes.base``), so a
malformed header can never become a 500 that the sender retries forever.  Messages name the
problem and the header; they never echo a secret or a signature.
"""

from __future__ import annotations

from topology.errors import TaskqError


class WebhookError(TaskqError):
    """A webhook was refused or cannot be handled; the subclass says which answer to give."""


class SignatureRejected(WebhookError):
    """The delivery is not authentically signed (HTTP 401)."""


class TimestampRejected(WebhookError):
    """The delivery is authentic but was signed outside the tolerance window (HTTP 401)."""


class MalformedWebhook(WebhookError):
    """A header or body cannot be parsed, or holds too much to check (HTTP 400)."""


class UnknownSource(WebhookError):
    """No webhook source is configured under the requested name (HTTP 404)."""


class WebhookConfigError(WebhookError):
    """A secret or verifier option is unusable; raised when a verifier is built, never per request."""

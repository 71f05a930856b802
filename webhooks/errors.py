"""Webhook failures, split by the answer the receiver gives (see ``topology.errors`` for the root)."""

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

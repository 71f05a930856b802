"""Webhook sources in the topology file: how each sender signs, and which job an event becomes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from topology import limits, names
from topology.durations import Duration
from topology.priority import Priority

EVENT = "{event}"
SAMPLE_EVENT = "push"  # stands in for the event when a template is checked at load time


class WebhookScheme(StrEnum):
    """How a sender signs its deliveries."""

    GITHUB = "github"  # X-Hub-Signature-256, X-GitHub-Event, X-GitHub-Delivery
    STRIPE = "stripe"  # Stripe-Signature: t=...,v1=...; event id and type from the body
    STANDARD = "standard"  # Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature
    HMAC = "hmac"  # a configurable HMAC header (and optional timestamp, id and event headers)


HMAC_ONLY = ("header", "timestamp_header", "id_header", "event_header")
"""Keys that only the ``hmac`` scheme takes (the others fix their own headers)."""


def _as_tuple(value: object) -> object:
    """Let one name stand for a list of one (``secret_env: X`` or ``secret_env: [X, Y]``)."""
    return (value,) if isinstance(value, str) else value


class WebhookSourceSpec(BaseModel):
    """One ``webhooks:`` entry: a sender, its secrets, and the job its events become."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: WebhookScheme
    # Several secrets (newest first) let a sender rotate: any of them verifies.
    secret_env: tuple[str, ...] = ()
    secret_file: tuple[str, ...] = ()
    job: str
    priority: Priority = Priority.MEDIUM
    tolerance: Duration = 300_000  # how far a signed timestamp may be from now
    header: str | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    id_header: str | None = None
    event_header: str | None = None

    _tuples = field_validator("secret_env", "secret_file", mode="before")(_as_tuple)

    @field_validator("header", "timestamp_header", "id_header", "event_header")
    @classmethod
    def _header_names(cls, value: str | None) -> str | None:
        if value is not None and not names.HEADER_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.secret_env and not self.secret_file:
            raise ValueError(
                "name where the secret comes from: secret_env (an environment variable) or "
                "secret_file (a file), or a list of either for rotation"
            )
        if self.scheme is WebhookScheme.HMAC:
            if self.header is None:
                raise ValueError("the hmac scheme needs 'header': where the signature is sent")
        else:
            given = [key for key in HMAC_ONLY if getattr(self, key) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to scheme: hmac")
        if EVENT in self.job and not self.has_event:
            raise ValueError(
                f"job uses {EVENT} but this hmac source has no event_header to take it from"
            )
        words = self.job.split(".")
        if any(EVENT in word and word != EVENT for word in words) or words.count(EVENT) > 1:
            # The types a template makes must form a topic pattern, so they can be reserved.
            raise ValueError(
                f"job {self.job!r}: {EVENT} must be a whole dot-separated word, used once "
                f"(e.g. 'acme.{EVENT}')"
            )
        template = self.job.replace(EVENT, SAMPLE_EVENT)
        if "{" in template or "}" in template:
            raise ValueError(f"job {self.job!r}: the only placeholder is {EVENT}")
        problem = limits.job_type_problem(template, allow_wildcards=False)
        if problem:
            raise ValueError(f"job {self.job!r} does not make a job type: {problem}")
        return self

    @property
    def has_event(self) -> bool:
        """Return whether deliveries of this source carry an event name."""
        return self.scheme is not WebhookScheme.HMAC or self.event_header is not None

    def job_type(self, event: str | None) -> str | None:
        """Return the job type of an event, or ``None`` when the event cannot make one."""
        if EVENT not in self.job:
            return self.job
        if not event:
            return None
        job_type = self.job.replace(EVENT, event)
        return None if limits.job_type_problem(job_type, allow_wildcards=False) else job_type


WebhookSources = Annotated[dict[str, WebhookSourceSpec], Field(default_factory=dict)]

"""The webhook sources an app receives: each topology entry with its secrets and verifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from topology.compiled import CompiledTopology
from topology.errors import WebhookError
from topology.spec import WebhookScheme, WebhookSourceSpec
from webhooks.schemes.base import Verifier
from webhooks.schemes.hmac_header import HmacVerifier, github_verifier
from webhooks.schemes.standard import StandardVerifier
from webhooks.schemes.stripe import StripeVerifier

KEPT_HEADERS: dict[WebhookScheme, tuple[str, ...]] = {
    WebhookScheme.GITHUB: (
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-hub-signature-256",
    ),
    WebhookScheme.STRIPE: ("stripe-signature",),
    WebhookScheme.STANDARD: ("webhook-id", "webhook-timestamp", "webhook-signature"),
    WebhookScheme.HMAC: (),
}
"""The headers kept on the job, so a handler can verify the delivery again or read more of it."""


@dataclass(frozen=True, slots=True)
class Source:
    """One webhook source: its spec, and its verifier (``None`` while it has no usable secret)."""

    name: str
    spec: WebhookSourceSpec
    verifier: Verifier | None
    problem: str | None = None  # why there is no verifier: what the operator must set

    @property
    def kept_headers(self) -> tuple[str, ...]:
        """Return the names of the headers kept on each job (lower case)."""
        spec = self.spec
        own = (spec.header, spec.timestamp_header, spec.id_header, spec.event_header)
        return ("content-type", *KEPT_HEADERS[spec.scheme], *(h for h in own if h))


def load_sources(topology: CompiledTopology, environ: Mapping[str, str]) -> dict[str, Source]:
    """Return every source of the topology, with the verifier its secrets make."""
    sources = {}
    for name, spec in topology.webhooks:
        secrets, missing = _secrets(spec, environ)
        if not secrets:
            problem = f"webhook source {name!r} has no secret: set {missing}"
            logger.warning("{}; its deliveries are answered 503 until then", problem)
            sources[name] = Source(name, spec, None, problem)
            continue
        try:
            sources[name] = Source(name, spec, build_verifier(spec, secrets))
        except WebhookError as exc:
            problem = f"webhook source {name!r} has an unusable secret: {exc}"
            logger.warning("{}; its deliveries are answered 503 until then", problem)
            sources[name] = Source(name, spec, None, problem)
    return sources


def build_verifier(spec: WebhookSourceSpec, secrets: Sequence[str]) -> Verifier:
    """Return the verifier of ``spec``'s scheme for ``secrets`` (newest first)."""
    tolerance = spec.tolerance // 1000
    keys = [secret.encode() for secret in secrets]
    if spec.scheme is WebhookScheme.GITHUB:
        return github_verifier(keys)
    if spec.scheme is WebhookScheme.STRIPE:
        return StripeVerifier(keys, tolerance=tolerance)
    if spec.scheme is WebhookScheme.STANDARD:
        return StandardVerifier(list(secrets), tolerance=tolerance)
    if spec.header is None:  # the spec refuses an hmac source without one
        raise WebhookError("the hmac scheme needs a header")
    return HmacVerifier(
        keys,
        header=spec.header,
        algorithm=spec.algorithm,
        encoding=spec.encoding,
        prefix=spec.prefix,
        timestamp_header=spec.timestamp_header,
        tolerance=tolerance,
        id_header=spec.id_header,
        event_header=spec.event_header,
    )


def _secrets(spec: WebhookSourceSpec, environ: Mapping[str, str]) -> tuple[list[str], str]:
    """Return the secrets found (environment first, then files) and what to set when none is."""
    found = [environ[name] for name in spec.secret_env if environ.get(name)]
    for path in spec.secret_file:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            logger.warning("webhook secret file {} cannot be read: {}", path, exc)
            continue
        if text:
            found.append(text)
    wanted = [*spec.secret_env, *(f"the file {p}" for p in spec.secret_file)]
    return found, " or ".join(wanted)

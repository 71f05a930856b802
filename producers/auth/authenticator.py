"""One entry point for every door: ``Authorization: Bearer <API key or JWT>`` to a principal, within its token bucket (``rate`` requests a second, ``burst`` at once)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from jobstore.model import CredentialStore
from producers.auth.api_keys import PREFIX, ApiKeyVerifier
from producers.auth.bearer_tokens import JwtVerifier
from producers.auth.principal import Principal
from topology.errors import AuthenticationError, RateLimitedError
from topology.settings import AuthSettings

_MAX_BUCKETS = 10_000  # bearer-token subjects are unbounded; full buckets are dropped first


class RateLimiter:
    """Per-key token buckets held in this process (each API replica limits on its own)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token from ``key``'s bucket; return 0, or the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= _MAX_BUCKETS and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for key in full or list(self._buckets)[: _MAX_BUCKETS // 10]:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """Return a ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Verifies the credential of a request and takes a token from its rate bucket."""

    _keys: ApiKeyVerifier
    _bearer: JwtVerifier | None
    _limiter: RateLimiter

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return the principal of an ``Authorization`` header value (``AuthenticationError``, ``RateLimitedError`` or an unavailable store if not)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if not authorization:
            raise AuthenticationError(
                "send Authorization: Bearer <API key or access token>", error="invalid_request"
            )
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "use the Bearer scheme: Authorization: Bearer <API key or access token>",
                error="invalid_request",
            )
        if token.startswith(PREFIX):
            principal = await self._keys.verify(token)
        elif self._bearer is None:
            raise AuthenticationError("not an API key (tq_...), and bearer tokens are not enabled")
        else:
            principal = await self._bearer.verify(token)
        wait = self._limiter.take(principal.id)
        if wait > 0:
            raise RateLimitedError(
                f"too many requests for this credential; the limit is {self._limiter.rate:g}/s",
                retry_after=wait,
            )
        return principal


def open_authenticator(store: CredentialStore, settings: AuthSettings) -> Authenticator:
    """Return the authenticator ``settings`` describe, checking keys against ``store``."""
    keys = ApiKeyVerifier(
        store, pepper=settings.api_key_pepper, cache_ttl=settings.api_key_cache_ttl
    )
    bearer = JwtVerifier(settings) if settings.jwt_enabled else None
    return Authenticator(keys, bearer, RateLimiter(settings.rate_limit, settings.rate_burst))

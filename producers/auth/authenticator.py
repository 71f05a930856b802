"""One entry point for every door: ``Authorization: Bearer <API key or JWT>`` to a principal."""

from __future__ import annotations

from dataclasses import dataclass

from jobstore.model import CredentialStore
from producers.auth.api_keys import PREFIX, ApiKeyVerifier
from producers.auth.bearer_tokens import JwtVerifier
from producers.auth.principal import Principal
from producers.auth.rate_limit import RateLimiter
from topology.errors import AuthenticationError, RateLimitedError
from topology.settings import AuthSettings


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

"""Authentication settings read from ``TASKQ_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from topology.limits import tenant_problem

# Asymmetric algorithms only: a key that verifies is never also a key that signs, so an
# HS256 token "signed" with a public key can never pass (RFC 8725 section 2.1).
SIGNATURE_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


class AuthSettings(BaseModel):
    """API keys, bearer tokens (JWT) and the rate limits every credential gets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # API keys: verified keys are remembered this long per process, which is how long a
    # revoked key can still pass there.
    api_key_cache_ttl: Annotated[float, Field(ge=0, le=60)] = 5.0
    api_key_pepper: SecretStr | None = None  # keys the hash; changing it voids every key

    # Bearer tokens: off unless a JWKS URL or a key file is given.
    jwks_url: str | None = None
    jwt_keys_file: str | None = None  # a JWKS document or one PEM public key
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: str = "RS256,ES256"
    jwt_types: str = "at+jwt,application/at+jwt"  # accepted `typ` headers (RFC 9068)
    jwt_leeway: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwt_tenant_claim: str = "tenant"
    jwt_default_tenant: str = "default"  # for tokens without the claim; empty: refuse them
    jwt_scope_claim: str = "scope"
    jwt_job_types_claim: str = "job_types"
    jwks_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    jwks_cache_ttl: Annotated[float, Field(ge=1, le=86400)] = 300.0
    jwks_min_refresh: Annotated[float, Field(ge=0, le=3600)] = 30.0

    # Token buckets: requests per second and burst, per credential and per webhook source.
    rate_limit: Annotated[float, Field(ge=0)] = 1000.0  # 0: unlimited
    rate_burst: Annotated[int, Field(ge=1)] = 2000
    webhook_rate_limit: Annotated[float, Field(ge=0)] = 200.0
    webhook_rate_burst: Annotated[int, Field(ge=1)] = 400

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: str) -> str:
        chosen = _names(value)
        if not chosen:
            raise ValueError("name at least one algorithm, e.g. RS256,ES256")
        refused = [a for a in chosen if a not in SIGNATURE_ALGORITHMS]
        if refused:
            allowed = ", ".join(sorted(SIGNATURE_ALGORITHMS))
            raise ValueError(
                f"{', '.join(refused)} not allowed (never none or HMAC); choose from {allowed}"
            )
        return value

    @field_validator("jwt_default_tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        problem = tenant_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.jwks_url and self.jwt_keys_file:
            raise ValueError("set TASKQ_JWKS_URL or TASKQ_JWT_KEYS_FILE, not both")
        if self.jwt_enabled and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("bearer tokens need TASKQ_JWT_ISSUER and TASKQ_JWT_AUDIENCE")
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("TASKQ_JWKS_URL must be an https:// URL")
        return self

    @property
    def jwt_enabled(self) -> bool:
        """Return whether bearer tokens (JWT) are accepted besides API keys."""
        return bool(self.jwks_url or self.jwt_keys_file)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Return the allowed JWT signature algorithms."""
        return _names(self.jwt_algorithms)

    @property
    def token_types(self) -> tuple[str, ...]:
        """Return the accepted JWT ``typ`` headers, lower-cased."""
        return tuple(t.lower() for t in _names(self.jwt_types))

"""OAuth2/OIDC bearer tokens: JWTs verified with PyJWT against the issuer's public keys.

The checks follow RFC 8725 (JWT best current practices): the algorithm comes from the
allow-list and the key, never from the token alone; ``none`` and HMAC are never accepted;
``typ`` must name an access token; ``iss``, ``aud``, ``exp`` and ``sub`` are required, and
``exp``, ``nbf`` and ``iat`` are checked with a small leeway; header values such as ``kid``
are only ever looked up in a dict, never used as paths, queries or URLs.
"""

from __future__ import annotations

from typing import Any

import jwt

from producers.auth.principal import Principal
from producers.auth.scopes import Scope
from producers.auth.signing_keys import KeySource
from producers.tenancy import Viewer
from topology.errors import AuthenticationError
from topology.limits import job_type_problem, tenant_problem
from topology.settings import AuthSettings

MAX_TOKEN_CHARS = 8192  # real access tokens are a few hundred bytes to a few KiB
MAX_KID_CHARS = 256
_REQUIRED = ["exp", "iss", "aud", "sub"]


class JwtVerifier:
    """Turns a bearer JWT into a principal, or refuses it with the reason."""

    def __init__(self, settings: AuthSettings, keys: KeySource) -> None:
        self._settings = settings
        self._keys = keys
        self._algorithms = frozenset(settings.algorithms)
        self._types = frozenset(settings.token_types)

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid access token.

        Raises:
            AuthenticationError: the token is malformed, badly signed, expired, not yet valid,
                for another audience or issuer, of another type, or lacks a tenant.
            IdentityProviderUnavailableError: the issuer's keys cannot be fetched.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise AuthenticationError(f"the token's algorithm is not one of {allowed}")
        kind = header.get("typ")
        if not isinstance(kind, str) or kind.lower() not in self._types:
            raise AuthenticationError("the token is not an access token (its typ header)")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise AuthenticationError("the token's key id (kid) is malformed")
        key = await self._keys.key(kid)
        if key.algorithm_name != algorithm:
            raise AuthenticationError("the token's algorithm does not match its key's")
        claims = self._decode(token, key, algorithm)
        return self._principal(claims)

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        s = self._settings
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway,
                options={"require": _REQUIRED, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthenticationError("the token is not valid yet (nbf or iat)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"the token lacks the {exc.claim} claim") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError("the token's signature or claims are invalid") from exc

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self._settings
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise AuthenticationError("the token's sub claim must be a non-empty string")
        tenant = claims.get(s.jwt_tenant_claim, s.jwt_default_tenant or None)
        if not isinstance(tenant, str) or tenant_problem(tenant):
            raise AuthenticationError(
                f"the token's {s.jwt_tenant_claim} claim is missing or invalid"
            )
        return Principal(
            kind="jwt",
            id=f"jwt:{claims['iss']}:{subject}",
            name=subject,
            scopes=_scopes(claims.get(s.jwt_scope_claim)),
            viewer=Viewer(tenant, _patterns(claims.get(s.jwt_job_types_claim), s)),
        )


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthenticationError("the token is not a well-formed JWT") from exc
    return header


def _scopes(value: Any) -> frozenset[Scope]:
    """Return the known scopes of a ``scope`` claim: a space-separated string or a list."""
    names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    known = {s.value for s in Scope}
    return frozenset(Scope(n) for n in names if isinstance(n, str) and n in known)


def _patterns(value: Any, settings: AuthSettings) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = value.split() if isinstance(value, str) else value
    if (
        not isinstance(patterns, list | tuple)
        or len(patterns) > 100
        or any(
            not isinstance(p, str) or job_type_problem(p, allow_wildcards=True) for p in patterns
        )
    ):
        raise AuthenticationError(f"the token's {settings.jwt_job_types_claim} claim is invalid")
    return tuple(patterns)

"""OAuth2/OIDC bearer tokens: JWTs verified with PyJWT against the issuer's keys, as RFC 8725 advises."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from loguru import logger

from producers.auth.principal import Principal, Scope
from producers.tenancy import Viewer
from topology.errors import AuthenticationError, IdentityProviderUnavailableError, SettingsError
from topology.limits import job_type_problem, tenant_problem
from topology.settings import AuthSettings

MAX_TOKEN_CHARS = 8192  # real access tokens are a few hundred bytes to a few KiB
MAX_KID_CHARS = 256
MAX_JWKS_BYTES = 1024 * 1024
_REQUIRED = ["exp", "iss", "aud", "sub"]


def key_set(document: Any, *, where: str) -> dict[str | None, jwt.PyJWK]:
    """Return the usable asymmetric keys of a JWKS document, by ``kid``."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{where} is not a JWKS document ({{'keys': [...]}})")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric or unknown: never used to verify
        if entry.get("use", "sig") != "sig":
            continue
        try:
            found = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError as exc:
            logger.warning("skipping a key of {}: {}", where, exc)
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = found
    if not keys:
        raise ValueError(f"{where} holds no usable RSA, EC or OKP signing key")
    return keys


def pick(keys: Mapping[str | None, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    """Return the key ``kid`` names; a token without ``kid`` may use the only key there is."""
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


class StaticKeys:
    """Keys from a file: a JWKS document, or one PEM public key (which any ``kid`` selects)."""

    def __init__(self, path: str | Path) -> None:
        where = f"TASKQ_JWT_KEYS_FILE {path}"
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"{where} cannot be read: {exc}") from exc
        try:
            pem = data.lstrip().startswith(b"-----BEGIN")
            self._single = pem_key(data) if pem else None
            self._keys = {} if pem else key_set(orjson.loads(data), where=where)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise SettingsError(f"{where}: {exc}") from exc

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """Return the key for ``kid``."""
        found = self._single or pick(self._keys, kid)
        if found is None:
            raise AuthenticationError("the token's key id (kid) names no configured key")
        return found


def pem_key(data: bytes) -> jwt.PyJWK:
    """Return a PEM public key as a JWK bound to its one algorithm."""
    public: Any = load_pem_public_key(data)  # each family's to_jwk types only its own keys
    for family in (RSAAlgorithm, ECAlgorithm, OKPAlgorithm):
        with contextlib.suppress(jwt.InvalidKeyError):  # a key of another family
            return jwt.PyJWK.from_dict(family.to_jwk(public, as_dict=True))
    raise ValueError(f"{type(public).__name__} keys are not supported; use RSA, EC or Ed25519")


class JwksKeys:
    """Keys fetched from a JWKS URL, kept ``ttl`` seconds, refetched early for an unknown ``kid``."""

    def __init__(self, url: str, *, timeout: float, ttl: float, min_refresh: float) -> None:
        self._url = url
        self._timeout = timeout
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # of the last attempt, successful or not
        self._loaded_at: float | None = None  # of the last successful fetch
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """Return the key for ``kid``, fetching the set when it is stale or lacks ``kid``."""
        if self._stale():
            await self._refresh(force=False)
        found = pick(self._keys, kid)
        if found is None and kid is not None:
            await self._refresh(force=True)
            found = pick(self._keys, kid)
        if found is None:
            if not self._keys:
                raise IdentityProviderUnavailableError(
                    "the identity provider's keys (TASKQ_JWKS_URL) cannot be fetched"
                )
            raise AuthenticationError("the token's key id (kid) names no key of the issuer")
        return found

    def _stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= self._ttl

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._fetched_at is not None and now - self._fetched_at < self._min_refresh:
                return  # fetched (or tried) a moment ago: the answer would be the same
            if not force and not self._stale():
                return  # another request refreshed it while we waited
            self._fetched_at = now
            try:
                self._keys = key_set(await self._fetch(), where=self._url)
                self._loaded_at = time.monotonic()
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.warning("JWKS fetch from {} failed: {}", self._url, exc)

    async def _fetch(self) -> Any:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self._url, allow_redirects=False) as answer,
        ):
            answer.raise_for_status()
            body = await answer.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS document is over {MAX_JWKS_BYTES} bytes")
        return orjson.loads(body)


class JwtVerifier:
    """Turns a bearer JWT into a principal, or refuses it with the reason."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._keys = (
            JwksKeys(
                settings.jwks_url,
                timeout=settings.jwks_timeout,
                ttl=settings.jwks_cache_ttl,
                min_refresh=settings.jwks_min_refresh,
            )
            if settings.jwks_url
            else StaticKeys(cast(str, settings.jwt_keys_file))  # jwt_enabled: one of them is set
        )
        self._algorithms = frozenset(settings.algorithms)
        self._types = frozenset(settings.token_types)

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid access token, or refuse it with the reason (or ``IdentityProviderUnavailableError``)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError("the token is not a well-formed JWT") from exc
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
            id=f"jwt:{claims['iss']}:{subject}",
            scopes=_scopes(claims.get(s.jwt_scope_claim)),
            viewer=Viewer(tenant, _patterns(claims.get(s.jwt_job_types_claim), s)),
            name=subject,
        )


def _scopes(value: Any) -> frozenset[Scope]:
    """Return the known scopes of a ``scope`` claim: a space-separated string or a list."""
    names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    return Scope.known(names)


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

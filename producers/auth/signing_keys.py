"""Where bearer-token signature keys come from: a JWKS URL (cached) or a configured key file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from loguru import logger

from topology.errors import AuthenticationError, IdentityProviderUnavailableError, SettingsError

MAX_JWKS_BYTES = 1024 * 1024


class KeySource(Protocol):
    """Finds the public key a token names by its ``kid``."""

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """Return the key for ``kid`` (``None``: the token names none)."""
        ...


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
        """Load the file."""
        where = f"TASKQ_JWT_KEYS_FILE {path}"
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"{where} cannot be read: {exc}") from exc
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                self._single: jwt.PyJWK | None = pem_key(data)
                self._keys: dict[str | None, jwt.PyJWK] = {None: self._single}
            else:
                self._single = None
                self._keys = key_set(orjson.loads(data), where=where)
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
    public = load_pem_public_key(data)
    jwk: str | dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        raise ValueError(f"{type(public).__name__} keys are not supported; use RSA, EC or Ed25519")
    return jwt.PyJWK.from_dict(dict(jwk))


class JwksKeys:
    """Keys fetched from a JWKS URL, kept ``ttl`` seconds, refetched early for an unknown ``kid``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        ttl: float = 300.0,
        min_refresh: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # of the last attempt, successful or not
        self._loaded_at: float | None = None  # of the last successful fetch
        self._lock = asyncio.Lock()
        self.fetches = 0

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
        return self._loaded_at is None or self._clock() - self._loaded_at >= self._ttl

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._min_refresh:
                return  # fetched (or tried) a moment ago: the answer would be the same
            if not force and not self._stale():
                return  # another request refreshed it while we waited
            self._fetched_at = now
            self.fetches += 1
            try:
                self._keys = key_set(await self._fetch(), where=self._url)
                self._loaded_at = self._clock()
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

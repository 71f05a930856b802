"""API keys: their format, their keyed hash, and their verification with a short-lived cache."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from jobstore.model import ApiKeyRecord, CredentialStore
from producers.auth.principal import Principal, Scope
from producers.tenancy import Viewer
from topology.errors import AuthenticationError

PREFIX = "tq_"
ID_CHARS = 16
_FORMAT = re.compile(r"tq_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DEFAULT_PEPPER = b"taskq api key v1"
_MAX_CACHED = 10_000
TOUCH_EVERY = timedelta(minutes=1)  # how fresh a key's last-used time is kept
# Compared against when the key id is unknown, so an unknown key costs what a wrong one does.
_DUMMY = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: the record to store and the one time its full text is known."""

    record: ApiKeyRecord
    token: str


def parse(token: str) -> tuple[str, str] | None:
    """Return ``(id, secret)`` of an API key's text, or ``None`` when it is not one."""
    found = _FORMAT.fullmatch(token)
    return None if found is None else (found[1], found[2])


def digest(pepper: SecretStr | None, key_id: str, secret: str) -> bytes:
    """Return the keyed hash the store keeps for a key (bound to its id)."""
    key = b"" if pepper is None else pepper.get_secret_value().encode()
    return hmac.new(key or _DEFAULT_PEPPER, f"{key_id}:{secret}".encode(), "sha256").digest()


def make_key(
    *,
    name: str,
    tenant: str,
    scopes: tuple[Scope, ...],
    job_types: tuple[str, ...] | None = None,
    expires_at: datetime | None = None,
    pepper: SecretStr | None = None,
    now: datetime | None = None,
) -> NewKey:
    """Return a new random key and the record that stores its hash."""
    key_id = secrets.token_hex(ID_CHARS // 2)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=key_id,
        name=name,
        secret_hash=digest(pepper, key_id, secret),
        tenant=tenant,
        scopes=tuple(s.value for s in scopes),
        job_types=job_types,
        created_at=now or datetime.now(UTC),
        expires_at=expires_at,
    )
    return NewKey(record, f"{PREFIX}{key_id}_{secret}")


class ApiKeyVerifier:
    """Verifies API keys against the store, remembering good ones for ``cache_ttl`` seconds."""

    def __init__(
        self, store: CredentialStore, *, pepper: SecretStr | None = None, cache_ttl: float = 5.0
    ) -> None:
        self._store = store
        self._pepper = pepper
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[Principal, float]] = {}  # token: (principal, until)

    async def verify(self, token: str) -> Principal:
        """Return the principal of a valid, unrevoked, unexpired key."""
        principal, until = self._cache.get(token, (None, 0.0))
        if principal is not None and until > time.monotonic():
            return principal
        parsed = parse(token)
        if parsed is None:
            raise AuthenticationError("the API key is malformed (expected tq_<id>_<secret>)")
        key_id, secret = parsed
        presented = digest(self._pepper, key_id, secret)
        record = await self._store.get_api_key(key_id)
        expected = _DUMMY if record is None else record.secret_hash
        matches = hmac.compare_digest(expected, presented)
        if record is None or not matches:
            raise AuthenticationError("unknown or wrong API key")
        now = datetime.now(UTC)
        if not record.usable(now):
            raise AuthenticationError("the API key was revoked or has expired")
        # Unknown scope names are ignored.
        viewer = Viewer(record.tenant, record.job_types)
        principal = Principal(f"key:{record.id}", Scope.known(record.scopes), viewer, record.name)
        ttl = self._ttl
        if record.expires_at is not None:
            ttl = min(ttl, (record.expires_at - now).total_seconds())
        if ttl > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[token] = (principal, time.monotonic() + ttl)
        if record.last_used_at is None or now - record.last_used_at >= TOUCH_EVERY:
            await self._store.touch_api_key(key_id, now)
        return principal

"""API keys as the job store keeps them: the record and the ``CredentialStore`` port."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key: who it speaks for and what it may do; the secret itself is never stored."""

    id: str  # the public part of the key, by which it is looked up
    name: str
    secret_hash: bytes  # HMAC-SHA256 of the secret part
    tenant: str
    scopes: tuple[str, ...]
    job_types: tuple[str, ...] | None  # topic patterns it may touch; None: every job type
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        """Return whether the key is neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class CredentialStore(Protocol):
    """Where API keys live; every method is atomic on its own."""

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert ``key``; raise ``StoreError`` when its id is taken."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key with id ``key_id`` (revoked and expired ones too), or ``None``."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every key, oldest first."""
        ...

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked at ``at`` (once: a second revoke keeps the first time); ``None`` if unknown."""
        ...

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record that the key was used at ``at`` (never moving its last use back in time)."""
        ...
